package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// profile is the shape of a run.
type profile struct {
	name       string
	nodes      int
	visitors   int // plain HTTP visitors
	wsVisitors int // WebSocket visitors
	operators  int
	steps      []string       // faults of every run, in an order the seed shuffles
	duration   time.Duration  // after the steps, draw more faults until this much time went by
	weights    map[string]int // what to draw
	warmup     time.Duration
	cooldown   time.Duration
}

// profiles: short runs every fault kind once or more in about three
// minutes (make chaos, CI); long keeps drawing faults, leader kills most
// often, for about 25 minutes (make chaos-long).
func profileNamed(name string, nodes int) (profile, error) {
	p := profile{name: name, nodes: nodes, operators: 2, warmup: 3 * time.Second, cooldown: 4 * time.Second}
	switch name {
	case "short":
		p.visitors, p.wsVisitors = 48, 12
		p.steps = []string{
			kKillLeader, kKillLeader, kKillLeader, kKillFollower, kPause, kPartFollower, kPartLeader,
			kRestartNode, kRestartLeader, kRestartCluster, kGWEKill, kGWEKill, kGWEHealth, kGWEFollowerDown, kJoinLeave,
		}
		if nodes >= 5 {
			p.steps = append(p.steps, kKillTwo)
		}
	case "long":
		p.visitors, p.wsVisitors = 72, 18
		p.steps = []string{
			kKillLeader, kKillFollower, kPause, kPartFollower, kPartLeader, kRestartNode, kRestartLeader, kRestartCluster,
			kGWEKill, kGWEHealth, kGWEFollowerDown, kJoinLeave,
		}
		p.duration = 25 * time.Minute
		p.weights = map[string]int{
			kKillLeader: 6, kKillFollower: 2, kPause: 3, kPartFollower: 2, kPartLeader: 3, kRestartNode: 1, kRestartLeader: 2,
			kRestartCluster: 1, kGWEKill: 3, kGWEHealth: 2, kGWEFollowerDown: 2, kJoinLeave: 1,
		}
		if nodes >= 5 {
			p.steps = append(p.steps, kKillTwo)
			p.weights[kKillTwo] = 2
		}
	default:
		return p, fmt.Errorf("unknown profile %q: want short or long", name)
	}
	if nodes < 3 || nodes%2 == 0 {
		return p, fmt.Errorf("-nodes %d: want an odd number, at least 3", nodes)
	}
	return p, nil
}

// plan returns the profile's fixed steps in the seed's order, without
// partitions when there are no namespaces.
func (p profile) plan(r *rand.Rand, netns bool, _ int) []string {
	steps := slices.Clone(p.steps)
	if !netns {
		steps = slices.DeleteFunc(steps, func(k string) bool { return slices.Contains(partitionKinds, k) })
	}
	r.Shuffle(len(steps), func(i, j int) { steps[i], steps[j] = steps[j], steps[i] })
	return steps
}

// draw picks one more fault by the profile's weights.
func (p profile) draw(r *rand.Rand, netns bool, _ int) string {
	kinds := make([]string, 0, len(p.weights))
	for k := range p.weights {
		if netns || !slices.Contains(partitionKinds, k) {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds) // map order is random; the seed's draw must not be
	total := 0
	for _, k := range kinds {
		total += p.weights[k]
	}
	x := r.IntN(total)
	for _, k := range kinds {
		if x -= p.weights[k]; x < 0 {
			return k
		}
	}
	return kinds[len(kinds)-1]
}
