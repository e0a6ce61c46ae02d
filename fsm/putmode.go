package fsm

import "errors"

// ErrExists reports a PutMember in create mode (gwelbctl member add) for a
// route the pool already has: adding must never reset a member an operator
// drained or disabled (DESIGN.md §5.4).
var ErrExists = errors.New("already exists")
