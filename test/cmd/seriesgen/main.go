// Command seriesgen is a synthetic exporter for the scale benchmark: it
// serves /metrics with the series of N simulated deployments, named and
// labelled like test/pggitsim's (http_requests_total{namespace, deployment,
// version, status} and http_request_duration_seconds_bucket{..., le}), so
// rollguard's default templates group and match them exactly as in
// production.
//
// Counters are computed from the time since start at scrape time (a steady
// rate per deployment) instead of being incremented: the exporter does no
// work between scrapes and its cost does not disturb what is measured.
// One deployment in 50 is "hot" (20 % errors, most requests in the 5-10 s
// bucket) so the windows of a realistic share of triggers breach.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// buckets are test/pggitsim's: .005 .. 10 with 5 and 10.
var buckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func main() { os.Exit(run()) }

func run() int {
	listen := flag.String("listen", "127.0.0.1:0", "listen address; port 0 picks a free one (printed on stdout)")
	n := flag.Int("deployments", 100, "number of simulated deployments")
	perNS := flag.Int("per-namespace", 100, "deployments per namespace")
	rps := flag.Float64("rps", 10, "requests per second per deployment")
	flag.Parse()
	if *n <= 0 || *perNS <= 0 || *rps <= 0 {
		fmt.Fprintln(os.Stderr, "seriesgen: --deployments, --per-namespace and --rps must be > 0")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	g := &generator{start: time.Now(), n: *n, perNS: *perNS, rps: *rps}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "seriesgen: listen %s: %v\n", *listen, err)
		return 1
	}
	// The caller reads the address from the first stdout line.
	fmt.Printf("listening on %s\n", ln.Addr())
	mux := http.NewServeMux()
	mux.Handle("/metrics", g)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "seriesgen: serve: %v\n", err)
		return 1
	}
	return 0
}

type generator struct {
	start time.Time
	n     int
	perNS int
	rps   float64
}

// profile is one deployment's steady behaviour.
type profile struct {
	errFrac float64
	// cum[i] is the fraction of requests at or below buckets[i].
	cum [11]float64
}

var (
	healthy = profile{errFrac: 0.001, cum: [11]float64{0, 0, 0.01, 0.6, 0.97, 0.995, 0.999, 1, 1, 1, 1}}
	hot     = profile{errFrac: 0.2, cum: [11]float64{0, 0, 0.01, 0.3, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6, 1}}
)

func (g *generator) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	total := g.rps * time.Since(g.start).Seconds()
	bw := bufio.NewWriterSize(w, 256<<10)
	defer bw.Flush()
	bw.WriteString("# HELP http_requests_total Requests served, by status code.\n# TYPE http_requests_total counter\n")
	var num []byte
	f := func(v float64) []byte { num = strconv.AppendFloat(num[:0], v, 'f', 3, 64); return num }
	for i := range g.n {
		p := g.profile(i)
		ns, dep := g.names(i)
		for _, st := range [...]struct {
			code string
			frac float64
		}{{"200", 1 - p.errFrac}, {"500", p.errFrac}} {
			fmt.Fprintf(bw, `http_requests_total{namespace="%s",deployment="%s",version="v1",status="%s"} `, ns, dep, st.code)
			bw.Write(f(total * st.frac))
			bw.WriteByte('\n')
		}
	}
	bw.WriteString("# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n")
	for i := range g.n {
		p := g.profile(i)
		ns, dep := g.names(i)
		for b, le := range buckets {
			fmt.Fprintf(bw, `http_request_duration_seconds_bucket{namespace="%s",deployment="%s",version="v1",le="%s"} `, ns, dep, strconv.FormatFloat(le, 'g', -1, 64))
			bw.Write(f(total * p.cum[b]))
			bw.WriteByte('\n')
		}
		fmt.Fprintf(bw, `http_request_duration_seconds_bucket{namespace="%s",deployment="%s",version="v1",le="+Inf"} `, ns, dep)
		bw.Write(f(total))
		bw.WriteByte('\n')
	}
}

func (g *generator) profile(i int) profile {
	if i%50 == 0 {
		return hot
	}
	return healthy
}

func (g *generator) names(i int) (string, string) {
	return "ns-" + strconv.Itoa(i/g.perNS), "app-" + strconv.Itoa(i)
}
