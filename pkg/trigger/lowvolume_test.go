package trigger

import (
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/source"
)

// A quiet night is not blindness: traffic below minRate is its own state,
// lowvolume, which resets a run like nodata but never pages blind. An
// empty ratio (0/0) with a known low volume is low volume too.
func TestLowVolumeIsNotBlind(t *testing.T) {
	r := errorRate()
	r.MinRate = 1
	tr := New(r, 0)
	tr.Observe(at(0), Observation{Value: 0.2, Volume: 20})
	for s := 5; s <= 300; s += 5 {
		obs := Observation{Value: 0.5, Volume: 0.2} // 2 requests in 10 s, 1 failed
		if s%10 == 0 {
			obs = Observation{Err: source.ErrNoData, Volume: 0} // no request at all: 0/0
		}
		st, d, b := tr.Observe(at(s), obs)
		if st.State.String() != "lowvolume" || d != nil || b != nil {
			t.Fatalf("at %ds: state %s, decision %v, blind %v; want lowvolume and nothing emitted", s, st.State, d, b)
		}
	}
	// Traffic back: a breach starts a run from there.
	if st, _, _ := tr.Observe(at(305), Observation{Value: 0.2, Volume: 20}); st.State.String() != "pending" || !st.BreachStart.Equal(at(305)) {
		t.Errorf("after low volume: %s since %v, want pending since 305s", st.State, st.BreachStart)
	}
}

// A blind episode that was paged ends with a resolution when data
// returns, once.
func TestBlindResolvesWhenDataReturns(t *testing.T) {
	tr := New(errorRate(), 0)
	tr.Observe(at(0), val(0.01))
	var paged bool
	for s := 5; s <= 125; s += 5 {
		if _, _, b := tr.Observe(at(s), Observation{Err: source.ErrUnreachable, Volume: nan}); b != nil {
			paged = true
		}
	}
	if !paged {
		t.Fatal("no blind report after blindAfter")
	}
	_, _, b := tr.Observe(at(130), val(0.01))
	if b == nil || !b.Resolved || !b.Since.Equal(at(5)) || !b.Until.Equal(at(130)) {
		t.Fatalf("data back: blind report %+v, want the episode since 5s resolved", b)
	}
	if _, _, b := tr.Observe(at(135), val(0.01)); b != nil {
		t.Errorf("a second resolution %+v", b)
	}
	// An episode too short to page resolves nothing.
	tr.Observe(at(140), Observation{Err: source.ErrUnreachable, Volume: nan})
	if _, _, b := tr.Observe(at(145), val(0.01)); b != nil {
		t.Errorf("resolution of an unpaged episode: %+v", b)
	}
}

// Blindness is rollguard's own: no data for blindAfter while it looked. A
// window rebuilt from history that shows no data (a new target, or a gap
// before this process started) does not page blind at the first live
// tick; blindAfter counts from when this process began looking, and the
// report still names the episode's start.
func TestRebuiltNoDataIsNotBlindAtStart(t *testing.T) {
	tr := New(errorRate(), 0)
	blindAfter := tr.Rule().BlindAfter
	noData := Observation{Err: source.ErrNoData, Volume: nan}
	for s := 0; s <= 200; s += 5 {
		tr.Replay(at(s), noData)
	}
	start := 205
	if _, _, b := tr.Observe(at(start), noData); b != nil {
		t.Fatalf("blind report at the first live tick after a rebuild: %+v", b)
	}
	var got *Blind
	s := start
	for ; got == nil && s <= start+int(blindAfter/time.Second)+5; s += 5 {
		_, _, got = tr.Observe(at(s), noData)
	}
	if got == nil {
		t.Fatalf("no blind report %v after this process began looking", blindAfter)
	}
	if reported := at(s - 5); reported.Sub(at(start)) < blindAfter || !got.Since.Equal(at(0)) {
		t.Errorf("blind report at %v (process looked from %v, blindAfter %v), since %v; want after blindAfter of looking, since the episode's start %v",
			reported, at(start), blindAfter, got.Since, at(0))
	}
}
