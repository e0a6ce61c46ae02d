package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// The gossip keyring (DESIGN.md §4), Consul's model: every node keeps its
// gossip encryption keys in data_dir/keyring (a JSON array of base64 keys,
// the primary first, mode 0600) and loads it at start; gossip_key only
// seeds the file on a node's first start. An operator rotates the key with
// gwelbctl keyring install, use and remove; the node that receives the call
// applies it on every node alive in gossip and answers per node.

// keyringFile is the keyring's file name in data_dir.
const keyringFile = "keyring"

// gossipKeyring is a node's gossip encryption keys: memberlist's keyring,
// which gossip encrypts and decrypts with, and its file.
type gossipKeyring struct {
	path string
	mu   sync.Mutex // serialises changes, so file and memory agree
	ring *memberlist.Keyring
}

// openKeyring loads data_dir/keyring, or creates it from seed (gossip_key)
// when it does not exist yet. It returns nil when neither exists: gossip
// runs unencrypted. A seed missing from an existing keyring is only
// logged: the file is the truth once it exists.
func (n *Node) openKeyring(seed []byte) (*gossipKeyring, error) {
	path := filepath.Join(n.cfg.DataDir, keyringFile)
	keys, err := readKeyring(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(seed) == 0 {
			return nil, nil
		}
		keys = [][]byte{seed}
		if err := writeKeyring(path, keys); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case len(seed) > 0 && !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, seed) }):
		n.log.Warn("gossip_key is not in the keyring; using the keyring (gossip_key only seeds a new one)", "keyring", path)
	}
	ring, err := memberlist.NewKeyring(keys[1:], keys[0])
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return &gossipKeyring{path: path, ring: ring}, nil
}

// readKeyring reads a keyring file; every key must be valid.
func readKeyring(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	var encoded []string
	if err := json.Unmarshal(data, &encoded); err != nil {
		return nil, fmt.Errorf("keyring %s: want a JSON array of base64 keys: %w", path, err)
	}
	if len(encoded) == 0 {
		return nil, fmt.Errorf("keyring %s: no keys", path)
	}
	keys := make([][]byte, 0, len(encoded))
	for i, e := range encoded {
		k, err := decodeGossipKey(e)
		if err != nil {
			return nil, fmt.Errorf("keyring %s: key %d: %w", path, i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// writeKeyring replaces the keyring file atomically (a synced temporary
// file renamed over it), readable by the owner only: it holds secrets.
func writeKeyring(path string, keys [][]byte) error {
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = base64.StdEncoding.EncodeToString(k)
	}
	data, err := json.Marshal(encoded)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), keyringFile+".tmp*")
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	return nil
}

// decodeGossipKey decodes a base64 gossip key of 16, 24 or 32 bytes.
func decodeGossipKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	if err := memberlist.ValidateKey(k); err != nil {
		return nil, fmt.Errorf("%d bytes: %w", len(k), err)
	}
	return k, nil
}

// keys returns a copy of the keys, the primary first.
func (g *gossipKeyring) keys() [][]byte {
	return slices.Clone(g.ring.GetKeys())
}

// apply runs one keyring operation on this node: the file first, then
// memory, so a node that cannot persist a change does not make it.
func (g *gossipKeyring) apply(op gwelbv1.KeyringOp, key []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.keys()
	has := slices.ContainsFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) })
	switch op {
	case gwelbv1.KeyringOp_KEYRING_OP_LIST:
		return nil
	case gwelbv1.KeyringOp_KEYRING_OP_INSTALL:
		if has {
			return nil
		}
		if err := writeKeyring(g.path, append(cur, key)); err != nil {
			return err
		}
		return g.ring.AddKey(key)
	case gwelbv1.KeyringOp_KEYRING_OP_USE:
		if !has {
			return errors.New("the key is not installed")
		}
		next := append([][]byte{key}, slices.DeleteFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) })...)
		if err := writeKeyring(g.path, next); err != nil {
			return err
		}
		return g.ring.UseKey(key)
	case gwelbv1.KeyringOp_KEYRING_OP_REMOVE:
		if bytes.Equal(cur[0], key) {
			return errors.New("the key is the primary key; use another key first")
		}
		if !has {
			return nil
		}
		next := slices.DeleteFunc(slices.Clone(cur), func(k []byte) bool { return bytes.Equal(k, key) })
		if err := writeKeyring(g.path, next); err != nil {
			return err
		}
		return g.removeKey(cur, key)
	}
	return fmt.Errorf("keyring operation %v: unknown", op)
}

// removeKey drops key (not the primary) from the ring, which holds cur.
//
// memberlist's RemoveKey removes in place (append(keys[:i], keys[i+1:]...)),
// writing into the array that gossip's decryption may be reading after
// GetKeys returned it: a data race unless the key is the last one, when
// nothing is moved. So the keys after it are removed first, last to first,
// the key itself, and they are added back in their order; each step builds
// a new slice. Those keys are missing from this node's ring for
// microseconds: a gossip packet sent with one of them then is dropped, and
// gossip sends again.
func (g *gossipKeyring) removeKey(cur [][]byte, key []byte) error {
	i := slices.IndexFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) })
	after := cur[i+1:]
	for j := len(after) - 1; j >= 0; j-- {
		if err := g.ring.RemoveKey(after[j]); err != nil {
			return err
		}
	}
	if err := g.ring.RemoveKey(key); err != nil {
		return err
	}
	for _, k := range after {
		if err := g.ring.AddKey(k); err != nil {
			return err
		}
	}
	return nil
}

// keyringLocal applies op on this node and describes the result.
func (n *Node) keyringLocal(op gwelbv1.KeyringOp, key []byte) *gwelbv1.KeyringNodeResult {
	res := &gwelbv1.KeyringNodeResult{Node: n.cfg.Name}
	g := n.gossipKeys
	if g == nil {
		res.Error = "gossip encryption is off on this node (no gossip_key, no keyring): a keyring cannot be added while it runs"
		return res
	}
	if err := g.apply(op, key); err != nil {
		res.Error = err.Error()
	}
	for _, k := range g.keys() {
		res.Keys = append(res.Keys, base64.StdEncoding.EncodeToString(k))
	}
	res.Primary = res.Keys[0]
	if op != gwelbv1.KeyringOp_KEYRING_OP_LIST && res.Error == "" {
		n.log.Info("gossip keyring changed", "op", strings.TrimPrefix(op.String(), "KEYRING_OP_"), "keys", len(res.Keys))
	}
	return res
}

// keyringAll applies op on every node alive in gossip, this one included,
// in parallel, and answers per node, by name. Raft voters that gossip does
// not list alive cannot be reached: each gets a result with an error, so
// the operator sees who missed the change.
func (n *Node) keyringAll(ctx context.Context, op gwelbv1.KeyringOp, key string, raw []byte) []*gwelbv1.KeyringNodeResult {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
	defer cancel()
	var (
		mu  sync.Mutex
		out []*gwelbv1.KeyringNodeResult
		wg  sync.WaitGroup
	)
	add := func(r *gwelbv1.KeyringNodeResult) {
		mu.Lock()
		out = append(out, r)
		mu.Unlock()
	}
	seen := map[string]bool{n.cfg.Name: true}
	add(n.keyringLocal(op, raw))
	for _, m := range n.members() {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		wg.Go(func() {
			r, err := n.keyringPeer(ctx, m.Meta.GRPC, op, key)
			if err != nil {
				r = &gwelbv1.KeyringNodeResult{Node: m.Name, Error: err.Error()}
			}
			r.Node = m.Name
			add(r)
		})
	}
	wg.Wait()
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if name := string(s.ID); !seen[name] {
				add(&gwelbv1.KeyringNodeResult{Node: name, Error: "a Raft voter not alive in gossip: not reached; it keeps its keyring"})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetNode() < out[j].GetNode() })
	return out
}

// keyringPeer asks the peer at addr to apply op to itself only.
func (n *Node) keyringPeer(ctx context.Context, addr string, op gwelbv1.KeyringOp, key string) (*gwelbv1.KeyringNodeResult, error) {
	c, err := n.peers.client(addr)
	if err != nil {
		return nil, err
	}
	resp, err := c.Keyring(n.peers.outgoing(ctx), &gwelbv1.KeyringRequest{Op: op, Key: key, LocalOnly: true})
	if err != nil {
		return nil, fmt.Errorf("keyring on %s: %s", addr, status.Convert(err).Message())
	}
	if len(resp.GetNodes()) != 1 {
		return nil, fmt.Errorf("keyring on %s: %d results, want 1", addr, len(resp.GetNodes()))
	}
	return resp.GetNodes()[0], nil
}

// Keyring lists or changes the gossip keys of every live node, or with
// local_only of this node (DESIGN.md §4). use and remove check every live
// node first, so that no node sends with a key a peer cannot read: use
// wants the key installed everywhere, remove wants it primary nowhere.
func (s *adminServer) Keyring(ctx context.Context, req *gwelbv1.KeyringRequest) (*gwelbv1.KeyringResponse, error) {
	n := s.n
	op := req.GetOp()
	var raw []byte
	switch op {
	case gwelbv1.KeyringOp_KEYRING_OP_LIST:
	case gwelbv1.KeyringOp_KEYRING_OP_INSTALL, gwelbv1.KeyringOp_KEYRING_OP_USE, gwelbv1.KeyringOp_KEYRING_OP_REMOVE:
		k, err := decodeGossipKey(req.GetKey())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "keyring: key: %v", err)
		}
		raw = k
		req.Key = base64.StdEncoding.EncodeToString(k) // as keyrings list it
	default:
		return nil, status.Errorf(codes.InvalidArgument, "keyring: operation %v: want list, install, use or remove", op)
	}
	if n.gossipKeys == nil {
		return nil, status.Error(codes.FailedPrecondition, "keyring: gossip encryption is off on this node (no gossip_key): start the cluster with one")
	}
	if req.GetLocalOnly() {
		return &gwelbv1.KeyringResponse{Nodes: []*gwelbv1.KeyringNodeResult{n.keyringLocal(op, raw)}}, nil
	}
	if op == gwelbv1.KeyringOp_KEYRING_OP_USE || op == gwelbv1.KeyringOp_KEYRING_OP_REMOVE {
		if err := keyringPrecheck(op, req.GetKey(), n.keyringAll(ctx, gwelbv1.KeyringOp_KEYRING_OP_LIST, "", nil)); err != nil {
			return nil, err
		}
	}
	return &gwelbv1.KeyringResponse{Nodes: n.keyringAll(ctx, op, req.GetKey(), raw)}, nil
}

// keyringPrecheck refuses a use or remove that would leave some node
// unable to read another's gossip, judged from a list of every node:
// every node must answer; use wants key installed on each, remove wants it
// primary on none.
func keyringPrecheck(op gwelbv1.KeyringOp, key string, list []*gwelbv1.KeyringNodeResult) error {
	var problems []string
	for _, r := range list {
		switch {
		case r.GetError() != "":
			problems = append(problems, fmt.Sprintf("%s did not answer (%s)", r.GetNode(), r.GetError()))
		case op == gwelbv1.KeyringOp_KEYRING_OP_USE && !slices.Contains(r.GetKeys(), key):
			problems = append(problems, r.GetNode()+" does not have the key (keyring install it first)")
		case op == gwelbv1.KeyringOp_KEYRING_OP_REMOVE && r.GetPrimary() == key:
			problems = append(problems, r.GetNode()+" uses it as its primary key (keyring use another key first)")
		}
	}
	if len(problems) > 0 {
		return status.Errorf(codes.FailedPrecondition, "refused, no node changed: %s", strings.Join(problems, "; "))
	}
	return nil
}
