package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrRejected marks an HTTP answer that says the same request will never
// be accepted (400, 401, 403, 404, ...): the queue gives up at once.
var ErrRejected = errors.New("rejected")

// Post sends body as JSON to u with client and reads the answer the way a
// pager's API means it: 2xx delivered; 408, 429 and 5xx or a transport
// error retryable (with the peer's Retry-After); anything else rejected.
// Errors name what (the notifier) and the status and a little of the
// answer, with every string of secrets (a URL holding a token) removed;
// never the URL itself.
func Post(ctx context.Context, client *http.Client, what, u string, header http.Header, body []byte, now time.Time, secrets ...string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s request: %s", what, scrubErr(err, secrets))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// Timeouts, refused, reset, TLS: may clear. The *url.Error text
		// holds the URL, so only the scrubbed cause goes on.
		return fmt.Errorf("%s post: %w", what, Retryable(errors.New(scrubErr(err, secrets)), 0))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	answer := Truncate(strings.TrimSpace(Scrub(string(b), secrets...)), 200)
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		after := ParseRetryAfter(resp.Header.Get("Retry-After"), now)
		return fmt.Errorf("%s post: %w", what, Retryable(fmt.Errorf("%d %s", code, answer), after))
	default:
		return fmt.Errorf("%s post: %w: %d %s", what, ErrRejected, code, answer)
	}
}

func scrubErr(err error, secrets []string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return Scrub(err.Error(), secrets...)
}

// URLSecrets are the strings of a URL that may be its credential: the
// whole URL, its path and its query (a webhook's token usually sits in
// one of them), for Post's secrets.
func URLSecrets(raw string) []string {
	out := []string{raw, url.QueryEscape(raw)}
	u, err := url.Parse(raw)
	if err != nil {
		return out
	}
	if len(u.Path) > 1 {
		out = append(out, u.Path, u.EscapedPath())
	}
	if u.RawQuery != "" {
		out = append(out, u.RawQuery)
	}
	if u.User != nil {
		out = append(out, u.User.String())
	}
	return out
}

// DefaultTimeout bounds each request of a notifier given no timeout: a
// pager that does not answer must not hold the queue.
const DefaultTimeout = 10 * time.Second

// HTTPClient is the client a pager's notifier posts with: timeout bounds
// each request [DefaultTimeout], transport is for tests and proxies
// [http.DefaultTransport].
func HTTPClient(timeout time.Duration, transport http.RoundTripper) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if transport == nil {
		transport = http.DefaultTransport
	}
	return &http.Client{Timeout: timeout, Transport: transport}
}
