// Command verifier checks finpass audit proofs with nothing but the public key (vkey).
//
// It is the independent verifier of docs/audit.md §6: it shares no code with finpass_pipeline.
// Merkle proofs are checked by github.com/transparency-dev/merkle (RFC 9162 hasher), signed notes
// by golang.org/x/mod/sumdb/note, and the leaf is rebuilt from the proof's row following the
// documented finpass-leaf-v1 layout (below), not taken on trust.
//
// Input (stdin, JSON): {"vkey": "...", "inclusion": [proof...], "consistency": [proof...],
// "checkpoints": ["note", ...]}. Output (stdout, JSON): the same keys, one result per item:
// "ok" or the reason it was rejected. Exit status 0 whenever the input parsed.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// leafColumns is finpass-leaf-v1's column order (docs/audit.md §6).
var leafColumns = []string{
	"id", "event_type", "user_id_hash", "tenant_id", "resource_id", "resource_type", "action",
	"outcome", "severity", "description", "previous_values", "new_values", "performed_by",
	"performed_by_role", "source_system", "correlation_id", "request_id", "duration_ms",
	"error_code", "stack_trace", "client_version", "api_version", "compliance_flags",
	"retention_days", "created_at", "event_id", "occurred_at", "hash_key_id", "chain_id",
	"chain_seq", "row_hash", "audit_seq", "hash_version", "pii_digest",
}

// personalColumns is the digest's column order.
var personalColumns = []string{
	"session_id", "ip_address", "user_agent", "geolocation", "device_fingerprint", "details",
	"error_message",
}

var b64 = base64.StdEncoding.Strict()

type input struct {
	Vkey        string            `json:"vkey"`
	Inclusion   []json.RawMessage `json:"inclusion"`
	Consistency []json.RawMessage `json:"consistency"`
	Checkpoints []string          `json:"checkpoints"`
}

type output struct {
	Inclusion   []string `json:"inclusion"`
	Consistency []string `json:"consistency"`
	Checkpoints []string `json:"checkpoints"`
}

type checkpoint struct {
	origin string
	size   uint64
	root   []byte
}

// encodeValue writes v as Python's json.dumps(ensure_ascii=True) does: strings with \" \\ \n
// \r \t \b \f, every other byte outside 0x20..0x7e as \uXXXX (lowercase, UTF-16 surrogates),
// integers as written, null.
func encodeValue(buf *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		buf.WriteString("null")
	case json.Number:
		if _, err := strconv.ParseInt(string(x), 10, 64); err != nil {
			return fmt.Errorf("not an integer: %s", x)
		}
		buf.WriteString(string(x))
	case string:
		buf.WriteByte('"')
		for _, r := range x {
			switch {
			case r == '"':
				buf.WriteString(`\"`)
			case r == '\\':
				buf.WriteString(`\\`)
			case r == '\n':
				buf.WriteString(`\n`)
			case r == '\r':
				buf.WriteString(`\r`)
			case r == '\t':
				buf.WriteString(`\t`)
			case r == '\b':
				buf.WriteString(`\b`)
			case r == '\f':
				buf.WriteString(`\f`)
			case r >= 0x20 && r <= 0x7e:
				buf.WriteRune(r)
			case r > 0xffff:
				a, b := utf16.EncodeRune(r)
				fmt.Fprintf(buf, `\u%04x\u%04x`, a, b)
			default:
				fmt.Fprintf(buf, `\u%04x`, r)
			}
		}
		buf.WriteByte('"')
	default:
		return fmt.Errorf("unexpected value %v", v)
	}
	return nil
}

func encodeArray(values []any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, v := range values {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := encodeValue(&buf, v); err != nil {
			return nil, err
		}
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

func decode(raw []byte, into any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	d.DisallowUnknownFields()
	return d.Decode(into)
}

// strictNote refuses a note whose signature lines are not canonical base64 (so that no byte of
// it can change without the check failing), then opens it with the note package.
func openCheckpoint(text string, v note.Verifier) (*checkpoint, error) {
	_, sigs, found := strings.Cut(text, "\n\n")
	if !found {
		return nil, errors.New("not a signed note")
	}
	for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		parts := strings.Split(line, " ")
		if len(parts) != 3 {
			return nil, errors.New("malformed signature line")
		}
		raw, err := b64.DecodeString(parts[2])
		if err != nil || b64.EncodeToString(raw) != parts[2] {
			return nil, errors.New("signature is not canonical base64")
		}
	}
	n, err := note.Open([]byte(text), note.VerifierList(v))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		return nil, errors.New("not a checkpoint of this log (origin)")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return nil, errors.New("bad tree size line")
	}
	root, err := b64.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return nil, errors.New("bad root hash line")
	}
	return &checkpoint{lines[0], size, root}, nil
}

func hashes(list []string) ([][]byte, error) {
	out := make([][]byte, len(list))
	for i, s := range list {
		h, err := b64.DecodeString(s)
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("hash %d is not 32 bytes of base64", i)
		}
		out[i] = h
	}
	return out, nil
}

// rebuildLeaf makes the finpass-leaf-v1 bytes from the row, after checking its personal values
// against pii_digest under pii_salt (or, erased, that they are all null).
func rebuildLeaf(row map[string]any) ([]byte, error) {
	if len(row) != len(leafColumns)+len(personalColumns)+1 {
		return nil, errors.New("the row has unexpected columns")
	}
	digest, _ := row["pii_digest"].(string)
	if d, err := hex.DecodeString(digest); err != nil || len(d) != 32 || hex.EncodeToString(d) != digest {
		return nil, errors.New("pii_digest is not 64 lowercase hex characters")
	}
	personal := make([]any, len(personalColumns))
	for i, c := range personalColumns {
		v, ok := row[c]
		if !ok {
			return nil, fmt.Errorf("row lacks %s", c)
		}
		personal[i] = v
	}
	switch salt := row["pii_salt"].(type) {
	case nil:
		for i, v := range personal {
			if v != nil {
				return nil, fmt.Errorf("erased row (no salt) but %s is set", personalColumns[i])
			}
		}
	case string:
		s, err := hex.DecodeString(salt)
		if err != nil || len(s) != 16 || hex.EncodeToString(s) != salt {
			return nil, errors.New("pii_salt is not 32 lowercase hex characters")
		}
		enc, err := encodeArray(personal)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(append(s, enc...))
		if hex.EncodeToString(sum[:]) != digest {
			return nil, errors.New("personal values do not match pii_digest")
		}
	default:
		return nil, errors.New("pii_salt is neither null nor hex")
	}
	values := []any{"finpass-leaf-v1"}
	for _, c := range leafColumns {
		v, ok := row[c]
		if !ok {
			return nil, fmt.Errorf("row lacks %s", c)
		}
		values = append(values, v)
	}
	return encodeArray(values)
}

type inclusionProof struct {
	LeafIndex    uint64         `json:"leaf_index"`
	TreeSize     uint64         `json:"tree_size"`
	Leaf         string         `json:"leaf"`
	LeafEncoding string         `json:"leaf_encoding"`
	Inclusion    []string       `json:"inclusion"`
	Checkpoint   string         `json:"checkpoint"`
	Row          map[string]any `json:"row"`
}

func checkInclusion(raw []byte, v note.Verifier) error {
	var p inclusionProof
	if err := decode(raw, &p); err != nil {
		return err
	}
	if p.LeafEncoding != "finpass-leaf-v1" {
		return fmt.Errorf("unknown leaf encoding %q", p.LeafEncoding)
	}
	cp, err := openCheckpoint(p.Checkpoint, v)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if cp.size != p.TreeSize {
		return errors.New("tree_size differs from the checkpoint's")
	}
	leaf, err := rebuildLeaf(p.Row)
	if err != nil {
		return fmt.Errorf("row: %w", err)
	}
	given, err := b64.DecodeString(p.Leaf)
	if err != nil || !bytes.Equal(given, leaf) {
		return errors.New("leaf differs from the one rebuilt from the row")
	}
	path, err := hashes(p.Inclusion)
	if err != nil {
		return err
	}
	return proof.VerifyInclusion(rfc6962.DefaultHasher, p.LeafIndex, p.TreeSize,
		rfc6962.DefaultHasher.HashLeaf(leaf), path, cp.root)
}

type consistencyProof struct {
	FirstSize        uint64   `json:"first_size"`
	SecondSize       uint64   `json:"second_size"`
	Consistency      []string `json:"consistency"`
	FirstCheckpoint  string   `json:"first_checkpoint"`
	SecondCheckpoint string   `json:"second_checkpoint"`
}

func checkConsistency(raw []byte, v note.Verifier) error {
	var p consistencyProof
	if err := decode(raw, &p); err != nil {
		return err
	}
	first, err := openCheckpoint(p.FirstCheckpoint, v)
	if err != nil {
		return fmt.Errorf("first checkpoint: %w", err)
	}
	second, err := openCheckpoint(p.SecondCheckpoint, v)
	if err != nil {
		return fmt.Errorf("second checkpoint: %w", err)
	}
	if first.size != p.FirstSize || second.size != p.SecondSize {
		return errors.New("sizes differ from the checkpoints'")
	}
	path, err := hashes(p.Consistency)
	if err != nil {
		return err
	}
	return proof.VerifyConsistency(rfc6962.DefaultHasher, p.FirstSize, p.SecondSize, path,
		first.root, second.root)
}

func result(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

func main() {
	var in input
	raw, err := os.ReadFile("/dev/stdin")
	if err == nil {
		err = json.Unmarshal(raw, &in)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "verifier: bad input:", err)
		os.Exit(2)
	}
	v, err := note.NewVerifier(in.Vkey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "verifier: bad vkey:", err)
		os.Exit(2)
	}
	out := output{Inclusion: []string{}, Consistency: []string{}, Checkpoints: []string{}}
	for _, p := range in.Inclusion {
		out.Inclusion = append(out.Inclusion, result(checkInclusion(p, v)))
	}
	for _, p := range in.Consistency {
		out.Consistency = append(out.Consistency, result(checkConsistency(p, v)))
	}
	for _, c := range in.Checkpoints {
		_, err := openCheckpoint(c, v)
		out.Checkpoints = append(out.Checkpoints, result(err))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
