//go:build race

package fsm

// raceEnabled: the race detector slows the reference model tenfold, so
// the long property tests run fewer logs under it.
const raceEnabled = true
