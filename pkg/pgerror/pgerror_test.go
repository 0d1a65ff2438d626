package pgerror

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rollguard/rollguard/pkg/source"
)

func TestConnectionLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"server out of slots", &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}, source.ErrTooManyConnections},
		{"reserved slots", &pgconn.PgError{Code: "53300", Message: "remaining connection slots are reserved for roles with the SUPERUSER attribute"}, source.ErrTooManyConnections},
		{"database limit", &pgconn.PgError{Code: "53300", Message: `too many connections for database "pggit"`}, source.ErrTooManyConnections},
		{"role limit", &pgconn.PgError{Code: "53300", Message: `too many connections for role "rollguard"`}, source.ErrRoleConnectionLimit},
		{"role limit, wrapped", fmt.Errorf("connect: %w", &pgconn.PgError{Code: "53300", Message: `too many connections for role "rollguard"`}), source.ErrRoleConnectionLimit},
		{"translated message counts as the server's", &pgconn.PgError{Code: "53300", Message: "zu viele Verbindungen"}, source.ErrTooManyConnections},
		{"another SQLSTATE", &pgconn.PgError{Code: "57014"}, nil},
		{"not a PostgreSQL error", errors.New("dial tcp: connection refused"), nil},
		{"nil", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ConnectionLimit(tc.err); got != tc.want {
				t.Errorf("ConnectionLimit(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestCode(t *testing.T) {
	if got := Code(fmt.Errorf("x: %w", &pgconn.PgError{Code: "42704"})); got != CodeUndefinedObject {
		t.Errorf("Code = %q, want %q", got, CodeUndefinedObject)
	}
	if got := Code(errors.New("plain")); got != "" {
		t.Errorf("Code(plain) = %q, want empty", got)
	}
}
