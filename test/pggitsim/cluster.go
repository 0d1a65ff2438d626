package pggitsim

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

const (
	// SimulateLabel marks the Deployments the simulator serves traffic for.
	SimulateLabel = "pggitsim.rollguard.io/simulate"
	// apiContainer is the container whose image tag names the version.
	apiContainer = "api"
)

// Key names one version of one Deployment: the labels of every series.
type Key struct {
	Namespace  string `json:"namespace"`
	Deployment string `json:"deployment"`
	Version    string `json:"version"`
}

// cluster is the informer-backed view of the simulated Deployments.
type cluster struct {
	logger  *zap.Logger
	factory informers.SharedInformerFactory // Deployments, filtered by label
	podFact informers.SharedInformerFactory // Pods of every namespace
	deploys appslisters.DeploymentLister
	pods    corelisters.PodLister
	synced  []cache.InformerSynced
}

func newCluster(cs kubernetes.Interface, logger *zap.Logger) *cluster {
	// The label filter keeps the Deployment cache small; Pods carry no such
	// label, so they come from a second, unfiltered factory.
	df := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = SimulateLabel + "=true"
		}))
	pf := informers.NewSharedInformerFactory(cs, 0)
	d := df.Apps().V1().Deployments()
	p := pf.Core().V1().Pods()
	return &cluster{
		logger:  logger,
		factory: df,
		podFact: pf,
		deploys: d.Lister(),
		pods:    p.Lister(),
		synced:  []cache.InformerSynced{d.Informer().HasSynced, p.Informer().HasSynced},
	}
}

// start runs the informers until ctx ends and waits for the first list.
func (c *cluster) start(ctx context.Context, timeout time.Duration) error {
	c.factory.Start(ctx.Done())
	c.podFact.Start(ctx.Done())
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(wctx.Done(), c.synced...) {
		return fmt.Errorf("sync deployment and pod caches: %w", context.Cause(wctx))
	}
	return nil
}

// shutdown waits for the informer goroutines after ctx has ended.
func (c *cluster) shutdown() {
	c.factory.Shutdown()
	c.podFact.Shutdown()
}

// readyPods counts the Ready, non-terminating Pods of every simulated
// Deployment by image tag. Pods are matched through the Deployment's
// selector, which covers the Pods of its old and new ReplicaSets alike, so
// a rolling update shows both versions serving.
func (c *cluster) readyPods() (map[Key]int, error) {
	ds, err := c.deploys.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	out := map[Key]int{}
	for _, d := range ds {
		// The fake clientset's watch ignores label selectors: check again.
		if d.Labels[SimulateLabel] != "true" {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() {
			// An empty selector would match every Pod of the namespace.
			c.logger.Debug("skipping deployment with unusable selector",
				zap.String("namespace", d.Namespace), zap.String("deployment", d.Name), zap.Error(err))
			continue
		}
		pods, err := c.pods.Pods(d.Namespace).List(sel)
		if err != nil {
			return nil, fmt.Errorf("list pods of deployment %s/%s: %w", d.Namespace, d.Name, err)
		}
		for _, p := range pods {
			if !PodReady(p) {
				continue
			}
			out[Key{Namespace: d.Namespace, Deployment: d.Name, Version: podVersion(p)}]++
		}
	}
	return out, nil
}

// deploymentExists tells whether ns/name is a simulated Deployment.
func (c *cluster) deploymentExists(ns, name string) bool {
	d, err := c.deploys.Deployments(ns).Get(name)
	return err == nil && d.Labels[SimulateLabel] == "true"
}

// PodReady says whether p gets traffic, as the endpoints controller sees
// it: Ready and not terminating. The simulator serves from these Pods only.
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podVersion is the image tag of the api container, else the first one.
func podVersion(p *corev1.Pod) string {
	cs := p.Spec.Containers
	if len(cs) == 0 {
		return "unknown"
	}
	img := cs[0].Image
	for _, c := range cs {
		if c.Name == apiContainer {
			img = c.Image
			break
		}
	}
	return ImageTag(img)
}

// ImageTag returns the tag of an image reference ("latest" when it has
// none; a digest is dropped).
func ImageTag(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	name := image
	if i := strings.LastIndex(image, "/"); i >= 0 {
		name = image[i+1:]
	}
	if i := strings.LastIndex(name, ":"); i >= 0 && i < len(name)-1 {
		return name[i+1:]
	}
	return "latest"
}

// sortedVersions orders a Deployment's versions by ready Pods, most first,
// then by name, so answers are stable.
func sortedVersions(counts map[string]int) []string {
	vs := make([]string, 0, len(counts))
	for v := range counts {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool {
		if counts[vs[i]] != counts[vs[j]] {
			return counts[vs[i]] > counts[vs[j]]
		}
		return vs[i] < vs[j]
	})
	return vs
}
