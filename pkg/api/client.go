package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to a running daemon's API (the CLI's status, rollback and
// freeze commands).
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// Status fetches /api/v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &s)
	return s, err
}

// Rollback asks the daemon to run an action on a target.
func (c *Client) Rollback(ctx context.Context, target, action, reason string) (ActionResult, error) {
	var res ActionResult
	err := c.do(ctx, http.MethodPost, "/api/v1/targets/"+url.PathEscape(target)+"/rollback",
		ActionRequest{Action: action, Reason: reason}, &res)
	return res, err
}

// Freeze sets or clears a target's freeze.
func (c *Client) Freeze(ctx context.Context, target string, frozen bool, reason string) error {
	verb := "freeze"
	if !frozen {
		verb = "unfreeze"
	}
	return c.do(ctx, http.MethodPost, "/api/v1/targets/"+url.PathEscape(target)+"/"+verb, FreezeRequest{Reason: reason}, nil)
}

// ResumeGitOps lifts rollguard's suspension of a target's GitOps owner.
func (c *Client) ResumeGitOps(ctx context.Context, target, reason string) (string, error) {
	var out struct {
		Detail string `json:"detail"`
	}
	err := c.do(ctx, http.MethodPost, "/api/v1/targets/"+url.PathEscape(target)+"/resume-gitops", ResumeRequest{Reason: reason}, &out)
	return out.Detail, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("api %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("api %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("api %s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		msg := resp.Status
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg += ": " + e.Error
		}
		// Keep the server's verdict branchable: the CLI exits 2 on an
		// unknown target, 1 on a refusal.
		e2 := &StatusError{Msg: fmt.Sprintf("api %s %s: %s", method, path, msg)}
		switch resp.StatusCode {
		case http.StatusNotFound:
			e2.Err = ErrUnknownTarget
		case http.StatusConflict:
			e2.Err = ErrRefused
		}
		return e2
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("api %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// StatusError is a non-2xx answer; errors.Is matches ErrUnknownTarget for a
// 404 and ErrRefused for a 409. Its text is the server's message.
type StatusError struct {
	Msg string
	Err error
}

func (e *StatusError) Error() string { return e.Msg }
func (e *StatusError) Unwrap() error { return e.Err }
