// Package rawio reads and writes plain TCP sockets without the Go
// runtime's system call bookkeeping, on Linux (rawio_linux.go; DESIGN.md
// §1.2 step 5). Elsewhere nothing is ever ready and Wrap returns its
// argument.
package rawio
