package gitops

import (
	"reflect"
	"testing"
)

func TestRefs(t *testing.T) {
	tests := []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
		want        []Ref
	}{
		{"none", map[string]string{"app": "api"}, nil, nil},
		{"flux kustomization", map[string]string{LabelKustomizeName: "apps", LabelKustomizeNamespace: "flux-system"}, nil,
			[]Ref{{Tool: Flux, Kind: KindKustomization, Namespace: "flux-system", Name: "apps"}}},
		{"helm release before the kustomization that applied it",
			map[string]string{LabelHelmName: "api", LabelHelmNamespace: "prod", LabelKustomizeName: "apps", LabelKustomizeNamespace: "flux-system"}, nil,
			[]Ref{{Tool: Flux, Kind: KindHelmRelease, Namespace: "prod", Name: "api"}, {Tool: Flux, Kind: KindKustomization, Namespace: "flux-system", Name: "apps"}}},
		{"argo tracking annotation", nil, map[string]string{AnnotationArgoTrackingID: "api:apps/Deployment:prod/api"},
			[]Ref{{Tool: ArgoCD, Kind: KindApplication, Namespace: "argocd", Name: "api"}}},
		{"argo app in another namespace", nil, map[string]string{AnnotationArgoTrackingID: "team-a_api:apps/Deployment:prod/api"},
			[]Ref{{Tool: ArgoCD, Kind: KindApplication, Namespace: "team-a", Name: "api"}}},
		{"instance label is only a hint", map[string]string{LabelArgoInstance: "api"}, nil,
			[]Ref{{Tool: ArgoCD, Kind: KindApplication, Namespace: "argocd", Name: "api", Confirm: true}}},
		{"annotation and label naming the same app count once", map[string]string{LabelArgoInstance: "api"},
			map[string]string{AnnotationArgoTrackingID: "api:apps/Deployment:prod/api"},
			[]Ref{{Tool: ArgoCD, Kind: KindApplication, Namespace: "argocd", Name: "api"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Refs(tt.labels, tt.annotations, "argocd"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Refs = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMovedOnAndApplied(t *testing.T) {
	tests := []struct {
		name           string
		o              Owner
		moved, applied bool
	}{
		{"same revision", Owner{Ref: Ref{Kind: KindKustomization}, Revision: "main@sha1:a", Mark: &Mark{Revision: "main@sha1:a"}}, false, false},
		{"unknown revision never moves", Owner{Ref: Ref{Kind: KindKustomization}, Revision: "", Mark: &Mark{Revision: "main@sha1:a"}}, false, false},
		{"new commit", Owner{Ref: Ref{Kind: KindKustomization}, Revision: "main@sha1:b", Applied: "main@sha1:b", Mark: &Mark{Revision: "main@sha1:a", LiftedRevision: "main@sha1:b"}}, true, true},
		{"helm release: new generation", Owner{Ref: Ref{Kind: KindHelmRelease}, Generation: 7, ObservedGeneration: 6, Mark: &Mark{Generation: 6}}, true, false},
		{"helm release: own suspension only", Owner{Ref: Ref{Kind: KindHelmRelease}, Generation: 6, ObservedGeneration: 6, Mark: &Mark{Generation: 6}}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := movedOn(&tt.o); got != tt.moved {
				t.Errorf("movedOn = %v, want %v", got, tt.moved)
			}
			if got := applied(&tt.o); got != tt.applied {
				t.Errorf("applied = %v, want %v", got, tt.applied)
			}
		})
	}
}
