package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestConsoleDuringBadDeploy watches a bad deploy through the console in
// a real browser: the overview's error-rate row goes pending → firing → ok
// by the page's own live refresh (the page is never reloaded), the
// incident page shows the runbook timeline and the evidence chart, an
// action without the token is refused (and no button is there to click),
// the token unlocks the actions, whose confirmation shows the plan, and
// every page passes the accessibility checks at desktop and phone width.
func TestConsoleDuringBadDeploy(t *testing.T) {
	sb := newSandbox(t)
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	shots := screenshotDir(t)

	ns := "console-" + sandboxfixture.RandomHex(t, 3)
	sandboxfixture.Namespace(t, sb.kube, ns)
	bad := sb.badImage(t, pggitsim.Profile{ErrorRate: 0.2, LatencySeconds: 0.05})
	sandboxfixture.CreateDeployment(t, sb.kube, sandboxfixture.Simulated(sandboxfixture.Deployment(ns, deploymentName, healthyImage, 2)))
	sandboxfixture.WaitRolledOut(t, sb.deps, ns, deploymentName)
	base := startDaemon(t, sb, ns)
	ctx := browser(t, sb.env)
	row := fmt.Sprintf(`#targets tr[data-trigger="%s/error-rate"]`, deploymentName)

	t.Run("keyboard", func(t *testing.T) { keyboard(t, ctx, base) })
	run(t, ctx, "open the overview", 20*time.Second, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#targets")))
	// A mark on the window: it survives only if the page is never
	// reloaded, so every state seen below came by the live refresh.
	eval[int](t, ctx, `window.rollguardTestMark = 1`)
	waitState(t, ctx, row, "ok", 60*time.Second)
	shoot(t, ctx, shots, "overview-ok")
	t.Run("accessibility: overview", func(t *testing.T) { accessibility(t, ctx) })

	sandboxfixture.SetImage(t, sb.kube, ns, deploymentName, bad)
	t.Logf("deployed %s", bad)
	var shotPending, shotFiring bool
	states := watchStates(t, ctx, row, 150*time.Second, func(seen []string) bool {
		last := seen[len(seen)-1]
		if last == "pending" && !shotPending {
			shotPending = true
			shoot(t, ctx, shots, "overview-pending")
		}
		if last == "firing" && !shotFiring {
			shotFiring = true
			shoot(t, ctx, shots, "overview-firing")
		}
		return shotFiring && last == "ok"
	})
	if !inOrder(states, "pending", "firing", "ok") {
		t.Fatalf("overview showed %v; want pending, then firing, then ok", states)
	}
	mark := eval[int](t, ctx, `window.rollguardTestMark || 0`)
	if mark != 1 {
		t.Errorf("the overview was reloaded: the states did not come from the live refresh")
	}
	shoot(t, ctx, shots, "overview-recovered")
	sandboxfixture.WaitRolledOut(t, sb.deps, ns, deploymentName)

	// The incident page: found from the target page, followed until the
	// record says resolved.
	run(t, ctx, "open the target page", 20*time.Second, chromedp.Navigate(base+"/targets/"+deploymentName), chromedp.WaitVisible(chromedp.CSS("#interlocks")))
	href := waitJS(t, ctx, "an incident on the target page", 30*time.Second, `(() => { const a = document.querySelector('#target-incidents a[href^="/incidents/"]'); return a ? a.getAttribute('href') : ''; })()`,
		func(h string) bool { return h != "" })
	deadline := time.Now().Add(90 * time.Second)
	var status string
	for {
		run(t, ctx, "open the incident", 20*time.Second, chromedp.Navigate(base+href), chromedp.WaitVisible(chromedp.CSS("#timeline")))
		status = eval[string](t, ctx, `document.querySelector('.lead .state').textContent`)
		if status == "resolved" || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if status != "resolved" {
		t.Fatalf("incident %s: status %q, want resolved", href, status)
	}
	timeline := eval[[]string](t, ctx, `[...document.querySelectorAll('#timeline li .what')].map(e => e.textContent)`)
	for _, want := range []string{"Breach started", "detected", "Rollback initiated", "Step stop started", "restored", "System stable", "Rollback succeeded"} {
		if !containsAny(timeline, want) {
			t.Errorf("incident timeline lacks %q:\n%s", want, strings.Join(timeline, "\n"))
		}
	}
	type chartFacts struct {
		Points, Breaching, Threshold, Window int
		Label                                string
	}
	chart := eval[chartFacts](t, ctx, `({Points: document.querySelectorAll('#evidence svg.chart circle').length,
		Breaching: document.querySelectorAll('#evidence svg.chart circle.breach').length,
		Threshold: document.querySelectorAll('#evidence svg.chart line.chart-threshold').length,
		Window: document.querySelectorAll('#evidence svg.chart rect.chart-window').length,
		Label: (document.querySelector('#evidence svg.chart') || {getAttribute: () => ''}).getAttribute('aria-label')})`)
	if chart.Points == 0 || chart.Breaching == 0 || chart.Threshold != 1 || chart.Window != 1 {
		t.Errorf("evidence chart: %+v; want samples, breaching samples, one threshold line and the window", chart)
	}
	steps := eval[int](t, ctx, `document.querySelectorAll('#steps tbody tr').length`)
	if steps < 3 {
		t.Errorf("incident page lists %d steps", steps)
	}
	// Pages sent: what went out, not every event (Slack posts no line
	// per step).
	pages := eval[[]string](t, ctx, `[...document.querySelectorAll('#pages tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()).join(' | '))`)
	if !containsAny(pages, "pagerduty | detected") || !containsAny(pages, "slack | rollback_started") || !containsAny(pages, "slack | rollback_succeeded") ||
		!containsAny(pages, "| delivered |") || containsAny(pages, "slack | step_") {
		t.Errorf("pages sent:\n%s\nwant the PagerDuty pages and the two Slack messages, delivered", strings.Join(pages, "\n"))
	}
	// A refresh replaces the evidence; the sample table a reader opened
	// stays open.
	eval[bool](t, ctx, `document.querySelector('#samples-table').open = true; document.querySelector('#evidence').dataset.old = 'yes'; true`)
	waitJS(t, ctx, "the incident page's live refresh", 15*time.Second, `document.querySelector('#evidence').dataset.old || ''`, func(old string) bool { return old == "" })
	if !eval[bool](t, ctx, `document.querySelector('#samples-table').open`) {
		t.Errorf("the live refresh closed the samples table")
	}
	shoot(t, ctx, shots, "incident")
	t.Run("accessibility: incident", func(t *testing.T) { accessibility(t, ctx) })
	t.Run("downloads", func(t *testing.T) {
		for _, p := range []string{"/report.md", "/record.json"} {
			resp, err := http.Get(base + href + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") {
				t.Errorf("GET %s%s: %s, Content-Disposition %q", href, p, resp.Status, resp.Header.Get("Content-Disposition"))
			}
		}
	})

	// Actions: refused without the token, absent from the page.
	run(t, ctx, "open the target page", 20*time.Second, chromedp.Navigate(base+"/targets/"+deploymentName), chromedp.WaitVisible(chromedp.CSS("#interlocks")))
	buttons := eval[int](t, ctx, `document.querySelectorAll('#actions, button[data-action], dialog').length`)
	if buttons != 0 {
		t.Errorf("without a token the page holds %d action elements", buttons)
	}
	codes := eval[[]int](t, ctx, `Promise.all([
		fetch('/api/v1/targets/pggit-api/freeze', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"reason":"no token"}'}).then(r => r.status),
		fetch('/api/v1/targets/pggit-api/freeze', {method: 'POST', headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer wrong'}, body: '{"reason":"wrong token"}'}).then(r => r.status),
		fetch('/api/v1/targets/pggit-api/rollback', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"reason":"no token"}'}).then(r => r.status),
	])`)
	if fmt.Sprint(codes) != "[401 403 401]" {
		t.Errorf("actions without the right token answered %v, want [401 403 401]", codes)
	}
	if v, ok := sb.annotation(t, ns); ok {
		t.Errorf("a refused freeze left the annotation %q", v)
	}
	shoot(t, ctx, shots, "target-locked")

	// A wrong token does not unlock; the right one does.
	run(t, ctx, "sign in with a wrong token", 10*time.Second,
		chromedp.SendKeys(chromedp.CSS("#auth-token"), "wrong"), chromedp.Click(chromedp.CSS("#auth-form button")))
	waitJS(t, ctx, "the refusal", 10*time.Second, `(() => { const m = document.querySelector('#auth-form .auth-msg'); return m ? m.textContent : ''; })()`,
		func(msg string) bool { return strings.HasPrefix(msg, "Refused") })
	buttons = eval[int](t, ctx, `document.querySelectorAll('#actions').length`)
	if buttons != 0 {
		t.Errorf("a wrong token unlocked the actions")
	}
	run(t, ctx, "sign in", 10*time.Second, chromedp.SetValue(chromedp.CSS("#auth-token"), apiToken), chromedp.Click(chromedp.CSS("#auth-form button")),
		chromedp.WaitVisible(chromedp.CSS("#actions")))
	t.Run("accessibility: actions", func(t *testing.T) { accessibility(t, ctx) })

	// Freeze through the confirmation dialog, then unfreeze.
	run(t, ctx, "freeze", 15*time.Second,
		chromedp.SendKeys(chromedp.CSS("#fz-reason"), "console test freeze"),
		chromedp.Click(chromedp.CSS(`button[data-action="freeze"]`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm")))
	shoot(t, ctx, shots, "confirm-freeze")
	run(t, ctx, "confirm the freeze", 10*time.Second, chromedp.Click(chromedp.CSS("#confirm-ok")))
	sandboxfixture.WaitFor(t, "freeze annotation", 15*time.Second, 200*time.Millisecond, func(context.Context) (bool, string, error) {
		v, ok := sb.annotation(t, ns)
		return ok && v == "console test freeze", v, nil
	})
	waitJS(t, ctx, "the freeze interlock", 20*time.Second, `[...document.querySelectorAll('#interlocks tr')].map(r => r.textContent).filter(s => s.includes('Freeze')).join('')`,
		func(freeze string) bool {
			return strings.Contains(freeze, "blocks") && strings.Contains(freeze, "console test freeze") && strings.Contains(freeze, "set by")
		})
	shoot(t, ctx, shots, "target-frozen")
	run(t, ctx, "unfreeze", 15*time.Second,
		chromedp.SendKeys(chromedp.CSS("#uf-reason"), "console test done"),
		chromedp.Click(chromedp.CSS(`button[data-action="unfreeze"]`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm-ok")))
	sandboxfixture.WaitFor(t, "freeze annotation removed", 15*time.Second, 200*time.Millisecond, func(context.Context) (bool, string, error) {
		v, ok := sb.annotation(t, ns)
		return !ok, v, nil
	})

	// A rollback's confirmation shows the plan first; cancelling sends
	// nothing.
	run(t, ctx, "ask for a rollback", 15*time.Second,
		chromedp.SendKeys(chromedp.CSS("#rb-reason"), "console test rollback"),
		chromedp.Click(chromedp.CSS(`button[data-action="rollback"]`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm #plan")))
	// The target was just rolled back for this revision: the plan says
	// the executor refuses, and the confirmation cannot be confirmed.
	type confirmFacts struct {
		Plan     string
		Disabled bool
	}
	cf := eval[confirmFacts](t, ctx, `({Plan: document.querySelector('#confirm #plan').textContent, Disabled: document.querySelector('#confirm-ok').disabled})`)
	if !strings.Contains(cf.Plan, "already rolled back") || !cf.Disabled {
		t.Errorf("confirmation: plan %q, confirm disabled %v; want the executor's refusal and no way to confirm", cf.Plan, cf.Disabled)
	}
	shoot(t, ctx, shots, "confirm-rollback")
	run(t, ctx, "cancel", 10*time.Second, chromedp.Click(chromedp.CSS(`#confirm button[value="cancel"]`)), chromedp.WaitNotVisible(chromedp.CSS("#confirm")))

	t.Run("without JavaScript", func(t *testing.T) {
		// The console's one script is blocked: the pages are what the
		// server rendered. (Turning all script off would also stop the
		// probes this test reads the page with.)
		block := func(patterns ...*network.BlockPattern) chromedp.Action[chromedp.Void] {
			return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
					return err
				}
				_, err := cdp.Call(ctx, tg, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: patterns})
				return err
			})
		}
		run(t, ctx, "block the console's script", 10*time.Second, block(&network.BlockPattern{URLPattern: base + "/assets/console.js", Block: true}))
		defer run(t, ctx, "unblock", 10*time.Second, block())
		for _, p := range []struct{ path, rows string }{
			{"/", "#targets tr[data-trigger]"}, {"/targets/" + deploymentName, "#interlocks tbody tr"}, {href, "#timeline li"},
		} {
			run(t, ctx, "open "+p.path, 20*time.Second, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS("main")))
			type page struct {
				Rows, Auth, Charts int
				Refresh, Script    bool
			}
			pg := eval[page](t, ctx, `({Rows: document.querySelectorAll('`+p.rows+`').length, Auth: document.querySelectorAll('#auth-form, #actions').length,
				Charts: document.querySelectorAll('svg[role=img]').length, Refresh: !!document.querySelector('noscript'),
				Script: performance.getEntriesByType('resource').some(e => e.name.endsWith('/assets/console.js') && e.responseStatus === 200)})`)
			if pg.Rows == 0 || pg.Charts == 0 || pg.Auth != 0 || !pg.Refresh || pg.Script {
				t.Errorf("%s without JavaScript: %+v; want the rows and charts, no sign-in or actions, a reload fallback, the script not loaded", p.path, pg)
			}
		}
		shoot(t, ctx, shots, "incident-no-js")
	})

	t.Run("phone width", func(t *testing.T) {
		run(t, ctx, "phone viewport", 10*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
		for _, p := range []struct{ name, path, ready string }{
			{"phone-overview", "/", "#targets"},
			{"phone-target", "/targets/" + deploymentName, "#interlocks"},
			{"phone-incident", href, "#timeline"},
		} {
			run(t, ctx, "open "+p.path, 20*time.Second, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.ready)))
			overflow := eval[[]string](t, ctx, `[document.documentElement.scrollWidth - window.innerWidth].concat([...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-wrap')).slice(0, 5).map(e => e.tagName + '.' + e.className)).map(String)`)
			if overflow[0] != "0" && !strings.HasPrefix(overflow[0], "-") {
				t.Errorf("%s: the page scrolls sideways by %s px at 390 px: %v", p.path, overflow[0], overflow[1:])
			}
			accessibility(t, ctx)
			shoot(t, ctx, shots, p.name)
		}
	})
}

// waitState polls the row's state in the page until it is want.
func waitState(t *testing.T, ctx context.Context, row, want string, timeout time.Duration) {
	t.Helper()
	waitJS(t, ctx, "state "+want, timeout, `(document.querySelector('`+row+`') || {dataset: {}}).dataset.state || ''`, func(got string) bool { return got == want })
}

// watchStates records each change of the row's state as the page shows
// it, until done says so.
func watchStates(t *testing.T, ctx context.Context, row string, timeout time.Duration, done func(seen []string) bool) []string {
	t.Helper()
	var seen []string
	start := time.Now()
	for {
		st := eval[string](t, ctx, `(document.querySelector('`+row+`') || {dataset: {}}).dataset.state || ''`)
		if st != "" && (len(seen) == 0 || seen[len(seen)-1] != st) {
			seen = append(seen, st)
			t.Logf("overview: %s after %v", st, time.Since(start).Round(100*time.Millisecond))
			if done(seen) {
				return seen
			}
		}
		if time.Since(start) > timeout {
			t.Fatalf("overview states %v: not done within %v", seen, timeout)
		}
		if st == "" && time.Since(start) > 10*time.Second {
			t.Fatalf("the overview shows no row %s (states so far %v)", row, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitJS evaluates script every 200 ms until done accepts its value.
func waitJS[T any](t *testing.T, ctx context.Context, what string, timeout time.Duration, script string, done func(T) bool) T {
	t.Helper()
	start := time.Now()
	for {
		v := eval[T](t, ctx, script)
		if done(v) {
			return v
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not seen within %v (last %v)", what, timeout, v)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func inOrder(seen []string, want ...string) bool {
	i := 0
	for _, s := range seen {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

func containsAny(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// accessibility checks the page as it is: a language, a title, one h1;
// every form control labelled; every chart and bar named; and the
// contrast of every visible text against its background (WCAG AA: 4.5:1,
// 3:1 for large text).
func accessibility(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, p := range eval[[]string](t, ctx, a11yScript) {
		t.Errorf("accessibility: %s", p)
	}
}

const a11yScript = `(() => {
  const out = [];
  if (!document.documentElement.lang) out.push('html has no lang');
  if (!document.title.trim()) out.push('no title');
  if (document.querySelectorAll('h1').length !== 1) out.push(document.querySelectorAll('h1').length + ' h1 elements');
  for (const e of document.querySelectorAll('input, select, textarea')) {
    if (e.type === 'hidden' || e.closest('template')) continue;
    if (!(e.labels && e.labels.length) && !e.getAttribute('aria-label')) out.push('unlabelled control ' + e.outerHTML.slice(0, 80));
  }
  for (const e of document.querySelectorAll('svg[role=img]')) if (!e.getAttribute('aria-label')) out.push('unnamed chart');
  for (const e of document.querySelectorAll('progress')) if (!e.getAttribute('aria-label') && e.getAttribute('aria-hidden') !== 'true') out.push('unnamed progress bar');
  for (const e of document.querySelectorAll('button, a')) if (!e.textContent.trim() && !e.getAttribute('aria-label')) out.push('nameless ' + e.tagName);
  const parse = c => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null; const p = m[1].split(',').map(parseFloat); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let base = {r: 255, g: 255, b: 255};
    for (let i = layers.length - 1; i >= 0; i--) { const c = layers[i]; base = {r: c.r * c.a + base.r * (1 - c.a), g: c.g * c.a + base.g * (1 - c.a), b: c.b * c.a + base.b * (1 - c.a)}; }
    return base;
  };
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode, el = n.parentElement;
    if (!n.textContent.trim() || !el || seen.has(el)) continue;
    seen.add(el);
    if (el.closest('svg, template, noscript, script, style, .skip, dialog:not([open])')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.display === 'none') continue;
    const fg = parse(cs.color), bg = background(el);
    const l1 = lum(fg), l2 = lum(bg), ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(cs.fontSize), large = size >= 24 || (parseInt(cs.fontWeight) >= 700 && size >= 18.66);
    const need = large ? 3 : 4.5;
    if (ratio < need) out.push('contrast ' + ratio.toFixed(2) + ' < ' + need + ': ' + el.tagName + '.' + el.className + ' "' + n.textContent.trim().slice(0, 40) + '"');
  }
  return out;
})()`

// keyboard tabs through the overview: the skip link comes first, every
// stop is visibly focused, and the skip link moves focus to the content.
func keyboard(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	open := func() {
		run(t, ctx, "open the overview", 20*time.Second, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#targets")))
	}
	open()
	var stops []string
	for i := 0; i < 8; i++ {
		run(t, ctx, "tab", 5*time.Second, chromedp.KeyEvent(kb.Tab))
		type stop struct {
			Name    string
			Outline string
		}
		st := eval[stop](t, ctx, `(() => { const e = document.activeElement; const cs = getComputedStyle(e);
			return {Name: e.tagName + ' ' + (e.textContent || e.getAttribute('aria-label') || e.id || '').trim().slice(0, 30), Outline: cs.outlineStyle + ' ' + cs.outlineWidth}; })()`)
		stops = append(stops, st.Name)
		if strings.HasPrefix(st.Name, "BODY") {
			t.Fatalf("tab %d: nothing focused (stops %v)", i+1, stops)
		}
		if strings.HasPrefix(st.Outline, "none") || strings.HasSuffix(st.Outline, " 0px") {
			t.Errorf("tab %d: %s is focused without a visible outline (%s)", i+1, st.Name, st.Outline)
		}
	}
	t.Logf("tab stops: %v", stops)
	if !strings.Contains(stops[0], "Skip to content") {
		t.Errorf("the first tab stop is %q, want the skip link", stops[0])
	}
	open()
	run(t, ctx, "skip link", 5*time.Second, chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Enter))
	waitJS(t, ctx, "focus on the content after the skip link", 5*time.Second, `document.activeElement.id`, func(id string) bool { return id == "main" })
}

// The checks above can fail: on a page with low contrast, an unlabelled
// input, an unnamed chart and two h1 they report each problem.
func TestAccessibilityCheckFindsProblems(t *testing.T) {
	sb := newSandbox(t)
	ctx := browser(t, sb.env)
	page := `<!DOCTYPE html><html><head><title>bad</title></head><body>` +
		`<h1>one</h1><h1>two</h1><p class="faint">faint text</p><input id="x">` +
		`<svg role="img"></svg><progress value="1" max="2"></progress><button></button></body></html>`
	run(t, ctx, "open the bad page", 10*time.Second, chromedp.Navigate("about:blank"))
	eval[bool](t, ctx, "document.open(); document.write(`"+page+"`); document.close(); "+
		"document.querySelector('.faint').style.color = '#bbb'; document.body.style.background = '#fff'; true")
	got := strings.Join(eval[[]string](t, ctx, a11yScript), "\n")
	for _, want := range []string{"html has no lang", "2 h1 elements", "unlabelled control <input id=\"x\">", "unnamed chart", "unnamed progress bar", "nameless BUTTON", `contrast 1.92 < 4.5: P.faint "faint text"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the check did not report %q; it reported:\n%s", want, got)
		}
	}
}
