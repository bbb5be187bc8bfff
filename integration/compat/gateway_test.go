package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The JSON gateway is driven with plain net/http, as etcd's gateway docs
// do with curl: bytes are base64, 64-bit integers are strings.

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// obj is a decoded JSON object with helpers that fail the test when the
// shape differs from etcd's.
type obj map[string]any

// gwPost posts body to path on the member's client URL and decodes the JSON
// answer; it returns the HTTP status too.
func gwPost(t *testing.T, base, path, body string) (int, obj) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read body: %v", path, err)
	}
	var out obj
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("POST %s: answer is not a JSON object (%v): %s", path, err, raw)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("POST %s: content type %q, want application/json", path, ct)
	}
	return resp.StatusCode, out
}

// gwOK posts and requires a 200.
func gwOK(t *testing.T, base, path, body string) obj {
	t.Helper()
	code, out := gwPost(t, base, path, body)
	if code != http.StatusOK {
		t.Fatalf("POST %s %s: status %d, body %v", path, body, code, out)
	}
	return out
}

func (o obj) obj(t *testing.T, field string) obj {
	t.Helper()
	v, ok := o[field].(map[string]any)
	if !ok {
		t.Fatalf("field %q is %T (%v), want an object, in %v", field, o[field], o[field], o)
	}
	return obj(v)
}

func (o obj) list(t *testing.T, field string) []obj {
	t.Helper()
	v, ok := o[field].([]any)
	if !ok {
		t.Fatalf("field %q is %T (%v), want a list, in %v", field, o[field], o[field], o)
	}
	out := make([]obj, len(v))
	for i, e := range v {
		m, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("%s[%d] is %T, want an object", field, i, e)
		}
		out[i] = obj(m)
	}
	return out
}

// int64 reads a 64-bit integer field, which etcd's gateway writes as a
// JSON string.
func (o obj) int64(t *testing.T, field string) int64 {
	t.Helper()
	s, ok := o[field].(string)
	if !ok {
		t.Fatalf("field %q is %T (%v), want a 64-bit integer as a JSON string, in %v", field, o[field], o[field], o)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("field %q = %q: %v", field, s, err)
	}
	return n
}

// uint64 reads an unsigned 64-bit integer field (IDs, raft indexes),
// also a JSON string.
func (o obj) uint64(t *testing.T, field string) uint64 {
	t.Helper()
	s, ok := o[field].(string)
	if !ok {
		t.Fatalf("field %q is %T (%v), want a 64-bit integer as a JSON string, in %v", field, o[field], o[field], o)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("field %q = %q: %v", field, s, err)
	}
	return n
}

// bytes reads a base64 bytes field.
func (o obj) bytes(t *testing.T, field string) string {
	t.Helper()
	s, ok := o[field].(string)
	if !ok {
		t.Fatalf("field %q is %T (%v), want base64 text, in %v", field, o[field], o[field], o)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("field %q = %q is not base64: %v", field, s, err)
	}
	return string(b)
}

// absent requires that zero-valued fields are left out.
func (o obj) absent(t *testing.T, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if v, ok := o[f]; ok {
			t.Errorf("field %q = %v should be left out (zero value), in %v", f, v, o)
		}
	}
}

// checkHeader checks a response header's etcd field names and encodings.
func checkHeader(t *testing.T, o obj) int64 {
	t.Helper()
	h := o.obj(t, "header")
	for _, f := range []string{"cluster_id", "member_id", "raft_term"} {
		if h.uint64(t, f) == 0 {
			t.Errorf("header %s is zero", f)
		}
	}
	return h.int64(t, "revision")
}

// testGateway drives etcd's JSON gateway on a member's client port.
func testGateway(t *testing.T, e *env) {
	base := e.c.Members[0].ClientURL
	p := prefix(t)
	key := func(s string) string { return b64(p + s) }

	t.Run("PutRangeDelete", func(t *testing.T) {
		put := gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, key("a"), b64("1")))
		rev := checkHeader(t, put)
		put.absent(t, "prev_kv")

		put2 := gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q,"prev_kv":true}`, key("a"), b64("2")))
		if prev := put2.obj(t, "prev_kv"); prev.bytes(t, "value") != "1" || prev.int64(t, "mod_revision") != rev {
			t.Errorf("prev_kv %v, want value 1 at %d", prev, rev)
		}
		gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, key("b"), b64("3")))

		rng := gwOK(t, base, "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q}`, key(""), key("z")))
		checkHeader(t, rng)
		if n := rng.int64(t, "count"); n != 2 {
			t.Errorf("count %d, want 2", n)
		}
		rng.absent(t, "more")
		kvs := rng.list(t, "kvs")
		if len(kvs) != 2 {
			t.Fatalf("kvs %v, want 2", kvs)
		}
		a := kvs[0]
		if a.bytes(t, "key") != p+"a" || a.bytes(t, "value") != "2" || a.int64(t, "version") != 2 ||
			a.int64(t, "create_revision") != rev || a.int64(t, "mod_revision") != rev+1 {
			t.Errorf("kv a: %v", a)
		}
		a.absent(t, "lease", "createRevision", "modRevision")

		missing := gwOK(t, base, "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, key("none")))
		checkHeader(t, missing)
		missing.absent(t, "kvs", "count", "more")

		limited := gwOK(t, base, "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q,"limit":1,"count_only":false,"sort_order":"DESCEND","sort_target":"KEY"}`, key(""), key("z")))
		if l := limited.list(t, "kvs"); len(l) != 1 || l[0].bytes(t, "key") != p+"b" || limited["more"] != true {
			t.Errorf("limited descending range: %v", limited)
		}

		del := gwOK(t, base, "/v3/kv/deleterange", fmt.Sprintf(`{"key":%q,"range_end":%q,"prev_kv":true}`, key(""), key("z")))
		if n := del.int64(t, "deleted"); n != 2 {
			t.Errorf("deleted %d, want 2", n)
		}
		if prev := del.list(t, "prev_kvs"); len(prev) != 2 {
			t.Errorf("prev_kvs %v, want 2", prev)
		}
		none := gwOK(t, base, "/v3/kv/deleterange", fmt.Sprintf(`{"key":%q}`, key("a")))
		none.absent(t, "deleted", "prev_kvs")
	})

	t.Run("Txn", func(t *testing.T) {
		gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, key("t"), b64("x")))
		body := fmt.Sprintf(`{
			"compare":[{"key":%q,"result":"EQUAL","target":"VALUE","value":%q}],
			"success":[{"request_put":{"key":%q,"value":%q}},{"request_range":{"key":%q}}],
			"failure":[{"request_delete_range":{"key":%q}}]}`,
			key("t"), b64("x"), key("t2"), b64("y"), key("t"), key("t"))
		txn := gwOK(t, base, "/v3/kv/txn", body)
		rev := checkHeader(t, txn)
		if txn["succeeded"] != true {
			t.Fatalf("txn did not succeed: %v", txn)
		}
		resps := txn.list(t, "responses")
		if len(resps) != 2 {
			t.Fatalf("responses %v, want 2", resps)
		}
		if r := resps[0].obj(t, "response_put").obj(t, "header").int64(t, "revision"); r != rev {
			t.Errorf("nested put header revision %d, want %d", r, rev)
		}
		rr := resps[1].obj(t, "response_range")
		if kvs := rr.list(t, "kvs"); len(kvs) != 1 || kvs[0].bytes(t, "value") != "x" {
			t.Errorf("range in txn: %v", rr)
		}
		// A failing compare takes the failure branch; "succeeded" is then
		// false and left out.
		fail := gwOK(t, base, "/v3/kv/txn", fmt.Sprintf(`{
			"compare":[{"key":%q,"result":"GREATER","target":"VERSION","version":"5"}],
			"failure":[{"request_range":{"key":%q}}]}`, key("t"), key("t2")))
		fail.absent(t, "succeeded")
		if rr := fail.list(t, "responses")[0].obj(t, "response_range"); rr.list(t, "kvs")[0].bytes(t, "value") != "y" {
			t.Errorf("failure branch: %v", rr)
		}
	})

	t.Run("Lease", func(t *testing.T) {
		grant := gwOK(t, base, "/v3/lease/grant", `{"TTL":"60"}`)
		checkHeader(t, grant)
		id := grant.int64(t, "ID")
		if id == 0 || grant.int64(t, "TTL") != 60 {
			t.Fatalf("grant: %v", grant)
		}
		gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q,"lease":"%d"}`, key("leased"), b64("v"), id))
		ttl := gwOK(t, base, "/v3/lease/timetolive", fmt.Sprintf(`{"ID":"%d","keys":true}`, id))
		checkHeader(t, ttl)
		if ttl.int64(t, "ID") != id || ttl.int64(t, "grantedTTL") != 60 || ttl.int64(t, "TTL") <= 0 {
			t.Errorf("time to live: %v", ttl)
		}
		if ks, ok := ttl["keys"].([]any); !ok || len(ks) != 1 || ks[0] != key("leased") {
			t.Errorf("time to live keys: %v, want [%s]", ttl["keys"], key("leased"))
		}
		unknown := gwOK(t, base, "/v3/lease/timetolive", `{"ID":"12345"}`)
		if unknown.int64(t, "TTL") != -1 {
			t.Errorf("time to live of an unknown lease: %v, want TTL -1", unknown)
		}
		gwOK(t, base, "/v3/lease/revoke", fmt.Sprintf(`{"ID":"%d"}`, id))
		code, errBody := gwPost(t, base, "/v3/lease/revoke", fmt.Sprintf(`{"ID":"%d"}`, id))
		checkError(t, code, errBody, http.StatusNotFound, 5, "etcdserver: requested lease not found")
	})

	t.Run("Watch", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(wctx, http.MethodPost, base+"/v3/watch",
			strings.NewReader(fmt.Sprintf(`{"create_request":{"key":%q}}`, key("w"))))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /v3/watch: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("POST /v3/watch: status %d: %s", resp.StatusCode, b)
		}
		lines := bufio.NewReader(resp.Body)
		next := func() obj {
			t.Helper()
			line, err := lines.ReadBytes('\n')
			if err != nil && len(bytes.TrimSpace(line)) == 0 {
				t.Fatalf("read a watch line: %v", err)
			}
			var msg obj
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber()
			if err := dec.Decode(&msg); err != nil {
				t.Fatalf("watch line is not JSON (%v): %s", err, line)
			}
			return msg.obj(t, "result")
		}
		created := next()
		checkHeader(t, created)
		if created["created"] != true {
			t.Fatalf("first watch message: %v, want created", created)
		}
		put := gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, key("w"), b64("hello")))
		rev := checkHeader(t, put)
		ev := next()
		events := ev.list(t, "events")
		if len(events) != 1 {
			t.Fatalf("watch message %v, want one event", ev)
		}
		events[0].absent(t, "type") // PUT is the zero value
		kv := events[0].obj(t, "kv")
		if kv.bytes(t, "key") != p+"w" || kv.bytes(t, "value") != "hello" || kv.int64(t, "mod_revision") != rev {
			t.Errorf("watch event kv: %v", kv)
		}
		gwOK(t, base, "/v3/kv/deleterange", fmt.Sprintf(`{"key":%q}`, key("w")))
		if del := next().list(t, "events"); len(del) != 1 || del[0]["type"] != "DELETE" {
			t.Errorf("delete event: %v", del)
		}
	})

	t.Run("Status", func(t *testing.T) {
		st := gwOK(t, base, "/v3/maintenance/status", `{}`)
		checkHeader(t, st)
		if st["version"] != "3.7.0" {
			t.Errorf("version %v", st["version"])
		}
		for _, f := range []string{"dbSize", "dbSizeInUse", "dbSizeQuota"} {
			if st.int64(t, f) <= 0 {
				t.Errorf("%s = %v, want positive", f, st[f])
			}
		}
		for _, f := range []string{"leader", "raftIndex", "raftTerm", "raftAppliedIndex"} {
			if st.uint64(t, f) == 0 {
				t.Errorf("%s = %v, want positive", f, st[f])
			}
		}
		st.absent(t, "errors", "isLearner", "db_size", "raft_index")
	})

	t.Run("Errors", func(t *testing.T) {
		cases := []struct {
			name, path, body string
			status           int
			code             int
			message          string // exact when set
		}{
			{"empty key put", "/v3/kv/put", fmt.Sprintf(`{"value":%q}`, b64("v")), 400, 3, "etcdserver: key is not provided"},
			{"empty key range", "/v3/kv/range", `{}`, 400, 3, "etcdserver: key is not provided"},
			{"future revision", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"revision":"100000000"}`, key("a")), 400, 11, "etcdserver: mvcc: required revision is a future revision"},
			{"duplicate key", "/v3/kv/txn", fmt.Sprintf(`{"success":[{"request_put":{"key":%q}},{"request_put":{"key":%q}}]}`, key("d"), key("d")), 400, 3, "etcdserver: duplicate key given in txn request"},
			{"unknown lease revoke", "/v3/lease/revoke", `{"ID":"4242"}`, 404, 5, "etcdserver: requested lease not found"},
			{"malformed JSON", "/v3/kv/put", `{"key":`, 400, 3, ""},
			{"wrong type", "/v3/kv/put", `{"key":12}`, 400, 3, ""},
			{"not base64", "/v3/kv/put", `{"key":"***"}`, 400, 3, ""},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				code, body := gwPost(t, base, tc.path, tc.body)
				checkError(t, code, body, tc.status, tc.code, tc.message)
			})
		}
		// The member still serves after bad input.
		put := gwOK(t, base, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, key("after"), b64("ok")))
		checkHeader(t, put)
		if _, err := e.cli.Get(ctx(t), p+"after"); err != nil {
			t.Errorf("gRPC after bad gateway input: %v", err)
		}
	})
}

// checkError checks an error body {"code":N,"message":"..."} and status.
func checkError(t *testing.T, status int, body obj, wantStatus, wantCode int, wantMessage string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("HTTP status %d, want %d (body %v)", status, wantStatus, body)
	}
	code, ok := body["code"].(json.Number)
	if !ok || code.String() != strconv.Itoa(wantCode) {
		t.Errorf("code %v, want %d as a JSON number (body %v)", body["code"], wantCode, body)
	}
	msg, ok := body["message"].(string)
	switch {
	case !ok || msg == "":
		t.Errorf("message %v, want text (body %v)", body["message"], body)
	case wantMessage != "" && msg != wantMessage:
		t.Errorf("message %q, want %q", msg, wantMessage)
	}
}
