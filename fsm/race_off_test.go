//go:build !race

package fsm

// raceEnabled: see race_on_test.go.
const raceEnabled = false
