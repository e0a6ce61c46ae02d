//go:build linux && race

package rawio

import "syscall"

// Under the race detector, sysRead and sysWrite are syscall's Read and
// Write: those tell the detector that the kernel wrote the buffer, and
// that a write to a socket happens before the read of its bytes in
// another goroutine of the same process (the tests' clients and members
// are), which RawSyscall does not. The poller path is the same.

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errno(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
