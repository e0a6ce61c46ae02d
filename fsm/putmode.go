package fsm

import "errors"

// ErrExists reports a PutMember in create mode (gwelbctl member add) for a
// route the pool already has: adding must never reset a member an operator
// drained or disabled (DESIGN.md §5.4).
var ErrExists = errors.New("already exists")

// MaxWeight is the largest member weight the validator accepts (the
// smallest is 1: a weight of 0 in a spec means "unset", read as 1).
const MaxWeight = maxWeight
