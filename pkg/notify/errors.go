package notify

import (
	"errors"
	"net/http"
	"strconv"
	"time"
)

// ErrRetryable marks a delivery failure that may succeed later (429, 5xx,
// timeouts, connection errors). Anything not wrapping it is final.
var ErrRetryable = errors.New("retryable")

// RetryableError is a retryable failure whose peer said when to come back
// (Retry-After). It matches errors.Is(err, ErrRetryable).
type RetryableError struct {
	// After is the peer's Retry-After; zero means use the queue's backoff.
	After time.Duration
	Err   error
}

func (e *RetryableError) Error() string {
	if e.Err == nil {
		return "retryable"
	}
	return e.Err.Error()
}

// Unwrap returns the cause.
func (e *RetryableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRetryable) true.
func (e *RetryableError) Is(target error) bool { return target == ErrRetryable }

// Retryable wraps err as retryable, after a Retry-After of d (0: none).
func Retryable(err error, d time.Duration) error {
	return &RetryableError{After: d, Err: err}
}

// IsRetryable reports whether err is worth another attempt.
func IsRetryable(err error) bool { return errors.Is(err, ErrRetryable) }

// RetryAfter returns the peer's Retry-After carried by err, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var re *RetryableError
	if errors.As(err, &re) && re.After > 0 {
		return re.After, true
	}
	return 0, false
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date (relative to now). It returns 0 when absent or unreadable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
