// Package console holds the web console's browser test: the daemon
// (app.Run) on the sandbox catches and rolls back a bad deploy while
// headless Chromium (Debian's package, which test/sandbox/up installs when
// missing; CHROMIUM_BIN in the sandbox env) watches the console through
// chromedp: the overview's trigger going pending → firing → ok by live
// refresh, the incident page's timeline and evidence chart, the actions
// refused without the token and working with it, an accessibility pass
// and a phone-width check. Screenshots go to $ROLLGUARD_SCREENSHOT_DIR, or
// test/console/.screenshots when unset; the test prints their paths.
//
// It has no non-test code; run it with
//
//	go test -p 1 -count=1 -v ./test/console/
//
// after `make sandbox-up`.
package console
