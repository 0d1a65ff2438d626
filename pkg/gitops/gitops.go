// Package gitops finds the GitOps controller object that reconciles a
// Deployment (a Flux Kustomization or HelmRelease, an Argo CD Application)
// and suspends or resumes its reconciliation.
//
// A rollback writes the Deployment's template; a GitOps controller sees the
// drift from Git and puts the bad version back within its interval. So
// before rollguard writes to a managed Deployment it either refuses (a
// human reverts the commit in Git), or suspends exactly the owning object
// and says what a human must revert. A suspension rollguard made carries a
// mark (an annotation with what it replaced), so it can be shown, lifted by
// a human or lifted by itself once Git has moved on, and never lifts a
// suspension somebody else made.
//
// The objects are read and patched as unstructured data through the
// dynamic client: rollguard needs a handful of fields, not the controllers'
// Go API modules.
package gitops

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Policies for a managed target (the config's gitops.mode).
const (
	// ModeRefuse: a managed target is not rolled back; the page names the
	// owner and the revision to revert in Git. The default.
	ModeRefuse = "refuse"
	// ModeSuspend: the owner's reconciliation is suspended before the
	// first write, journaled like every step.
	ModeSuspend = "suspend"
	// ModeIgnore: roll back as if nothing reconciled the Deployment.
	ModeIgnore = "ignore"
)

// Tools.
const (
	Flux   = "Flux"
	ArgoCD = "Argo CD"
)

// Kinds of owner.
const (
	KindKustomization = "Kustomization"
	KindHelmRelease   = "HelmRelease"
	KindApplication   = "Application"
)

// Labels and annotations that name a Deployment's owner.
const (
	LabelKustomizeName      = "kustomize.toolkit.fluxcd.io/name"
	LabelKustomizeNamespace = "kustomize.toolkit.fluxcd.io/namespace"
	LabelHelmName           = "helm.toolkit.fluxcd.io/name"
	LabelHelmNamespace      = "helm.toolkit.fluxcd.io/namespace"
	// LabelArgoInstance is Argo CD's default tracking label (label
	// tracking); Helm charts set the same key to their release name, so an
	// Application of that name must exist for it to count.
	LabelArgoInstance = "app.kubernetes.io/instance"
	// AnnotationArgoTrackingID is Argo CD's tracking annotation:
	// "<app>:<group>/<kind>:<namespace>/<name>", where <app> is
	// "<namespace>_<name>" for an Application outside Argo CD's namespace.
	AnnotationArgoTrackingID = "argocd.argoproj.io/tracking-id"
)

// MarkAnnotation is rollguard's mark on an object whose reconciliation it
// suspended: JSON of a Mark.
const MarkAnnotation = "rollguard.io/gitops-suspension"

// FieldManager owns rollguard's patches of the owners: Flux's server-side
// apply of a parent Kustomization keeps fields owned by other managers that
// Git does not set.
const FieldManager = "rollguard"

// Resources.
var (
	KustomizationGVR = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	HelmReleaseGVR   = schema.GroupVersionResource{Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"}
	ApplicationGVR   = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	sourceGVRs       = map[string]schema.GroupVersionResource{
		"GitRepository": {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"},
		"OCIRepository": {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "ocirepositories"},
		"Bucket":        {Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "buckets"},
	}
)

// Sentinel errors.
var (
	// ErrNotMarked: the owner carries no suspension of rollguard's; it is
	// not rollguard's to lift.
	ErrNotMarked = errors.New("not suspended by rollguard")
	// ErrChanged: the owner changed between the read and the write
	// (resourceVersion precondition).
	ErrChanged = errors.New("changed by another writer")
)

// Ref names a candidate owner, from a Deployment's labels or annotations.
type Ref struct {
	Tool      string `json:"tool"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Confirm: the reference is only a hint (Argo CD's instance label,
	// which Helm charts also set); not finding the object means no owner.
	Confirm bool `json:"-"`
}

func (r Ref) String() string { return r.Tool + " " + r.Kind + " " + r.Namespace + "/" + r.Name }

func (r Ref) gvr() schema.GroupVersionResource {
	switch r.Kind {
	case KindKustomization:
		return KustomizationGVR
	case KindHelmRelease:
		return HelmReleaseGVR
	}
	return ApplicationGVR
}

// Refs lists the owners a Deployment's labels and annotations name, most
// specific first: a HelmRelease (the chart's release is closer to the
// Deployment than a Kustomization that may have applied the HelmRelease),
// a Kustomization, an Argo CD tracking annotation, Argo CD's instance
// label. argoNamespace is where Argo CD keeps its Applications.
func Refs(labels, annotations map[string]string, argoNamespace string) []Ref {
	var out []Ref
	if n := labels[LabelHelmName]; n != "" {
		out = append(out, Ref{Tool: Flux, Kind: KindHelmRelease, Name: n, Namespace: labels[LabelHelmNamespace]})
	}
	if n := labels[LabelKustomizeName]; n != "" {
		out = append(out, Ref{Tool: Flux, Kind: KindKustomization, Name: n, Namespace: labels[LabelKustomizeNamespace]})
	}
	if id := annotations[AnnotationArgoTrackingID]; id != "" {
		app, _, _ := strings.Cut(id, ":")
		if r, ok := argoRef(app, argoNamespace); ok {
			out = append(out, r)
		}
	}
	if app := labels[LabelArgoInstance]; app != "" {
		if r, ok := argoRef(app, argoNamespace); ok {
			r.Confirm = true
			if len(out) == 0 || out[len(out)-1] != (Ref{Tool: r.Tool, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}) {
				out = append(out, r)
			}
		}
	}
	return out
}

func argoRef(app, argoNamespace string) (Ref, bool) {
	ns, name, ok := strings.Cut(app, "_")
	if !ok {
		ns, name = argoNamespace, app
	}
	if ns == "" || name == "" {
		return Ref{}, false
	}
	return Ref{Tool: ArgoCD, Kind: KindApplication, Namespace: ns, Name: name}, true
}

// Owner is the object that reconciles a Deployment, as read now.
type Owner struct {
	Ref
	// Source says where the owner takes Git from, for humans: "GitRepository
	// flux-system/apps (https://git.example/apps.git)" or an Argo CD
	// Application's repoURL, path and targetRevision.
	Source string `json:"source,omitempty"`
	// Revision is where Git is now: the Flux source's artifact revision
	// ("main@sha1:…"), the revision Argo CD compared with
	// (status.sync.revision), or for a HelmRelease, whose chart and values
	// live in its own spec, "generation N".
	Revision string `json:"revision,omitempty"`
	// Applied is the revision the owner last applied to the cluster.
	Applied string `json:"applied,omitempty"`
	// Suspended: reconciliation is off now (Flux spec.suspend, or an Argo
	// CD Application without automated sync), whoever turned it off.
	Suspended bool `json:"suspended"`
	// Generation of the owner object.
	Generation int64 `json:"generation,omitempty"`
	// ObservedGeneration is the generation the controller last handled.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Mark is rollguard's mark, when rollguard suspended it.
	Mark *Mark `json:"mark,omitempty"`

	resourceVersion string
}

// String is "Flux Kustomization flux-system/apps".
func (o *Owner) String() string { return o.Ref.String() }

// Describe is the owner with its source and revision, for pages.
func (o *Owner) Describe() string {
	s := o.String()
	if o.Source != "" {
		s += " (" + o.Source + ")"
	}
	if o.Revision != "" {
		s += " at " + o.Revision
	}
	return s
}

// SuspendedByRollguard: reconciliation is off and rollguard's mark says it
// turned it off.
func (o *Owner) SuspendedByRollguard() bool {
	return o.Suspended && o.Mark != nil && o.Mark.State == StateSuspended
}

// Mark states.
const (
	StateSuspended = "suspended"
	// StateLifted: rollguard lifted its suspension because the source
	// moved on, and waits to see whether the new revision brings the bad
	// template back.
	StateLifted = "lifted"
)

// Mark is what rollguard writes on an object whose reconciliation it
// suspended (MarkAnnotation).
type Mark struct {
	Target string `json:"target"`
	Run    string `json:"run,omitempty"`
	State  string `json:"state"`
	// Revision is where Git was when the suspension was made; the
	// suspension is lifted once the source moves past it.
	Revision string `json:"revision,omitempty"`
	// Generation is the owner's generation right after the suspension
	// (a HelmRelease's "revision").
	Generation int64 `json:"generation,omitempty"`
	// Bad is the bad version ("api=registry/app:v2") that must leave Git,
	// BadHash its pod-template-hash.
	Bad     string    `json:"bad,omitempty"`
	BadHash string    `json:"badHash,omitempty"`
	Since   time.Time `json:"since"`
	// Resuspended counts the suspensions made again because a new revision
	// brought the bad template back (at most once).
	Resuspended int `json:"resuspended,omitempty"`
	// LiftedRevision is the revision that made rollguard lift it.
	LiftedRevision string     `json:"liftedRevision,omitempty"`
	LiftedAt       *time.Time `json:"liftedAt,omitempty"`
	// Previous is what the suspension replaced, put back when it is
	// lifted: Flux's spec.suspend, Argo CD's spec.syncPolicy.automated
	// (null when absent).
	Previous json.RawMessage `json:"previous,omitempty"`
}

func parseMark(s string) (*Mark, error) {
	if s == "" {
		return nil, nil
	}
	var m Mark
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", MarkAnnotation, err)
	}
	return &m, nil
}

// What says what suspending an owner of this kind writes, for plans and
// pages.
func What(kind string) string {
	if kind == KindApplication {
		return "automated sync off (spec.syncPolicy.automated removed, kept in the mark to put back)"
	}
	return "spec.suspend: true"
}
