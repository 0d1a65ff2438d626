package main

import (
	"github.com/rollguard/rollguard/pkg/rollback"
)

// planDoc is `rollguard plan -o json|yaml`: the plan without the pod
// templates the journal keeps (they are the Deployment's, and long).
type planDoc struct {
	Namespace        string         `json:"namespace"`
	Deployment       string         `json:"deployment"`
	Action           string         `json:"action"`
	Resume           bool           `json:"resume"`
	RunID            string         `json:"runID,omitempty"`
	Bad              planRevision   `json:"bad"`
	Pinned           *planRevision  `json:"pinned,omitempty"`
	Replicas         int32          `json:"replicas"`
	MigrationApplied bool           `json:"migrationApplied"`
	Steps            []planStepView `json:"steps"`
}

type planRevision struct {
	// Source is how a pinned revision was chosen: stable-image or
	// previous-revision.
	Source          string            `json:"source,omitempty"`
	ReplicaSet      string            `json:"replicaSet,omitempty"`
	PodTemplateHash string            `json:"podTemplateHash,omitempty"`
	Revision        int64             `json:"revision,omitempty"`
	Images          map[string]string `json:"images,omitempty"`
}

type planStepView struct {
	Name        string `json:"name"`
	State       string `json:"state"`
	Idempotent  bool   `json:"idempotent"`
	Description string `json:"description"`
}

func newPlanDoc(pv *rollback.PlanView) planDoc {
	d := planDoc{
		Namespace: pv.Namespace, Deployment: pv.Deployment, Action: string(pv.Action), Resume: pv.Resume,
		Bad:      planRevision{ReplicaSet: pv.Bad.ReplicaSet, PodTemplateHash: pv.Bad.Hash, Revision: pv.Bad.Revision, Images: pv.Bad.Images},
		Replicas: pv.Replicas, MigrationApplied: pv.MigrationApplied, Steps: []planStepView{},
	}
	if pv.Resume {
		d.RunID = pv.RunID
	}
	if p := pv.Pinned; p != nil {
		d.Pinned = &planRevision{Source: p.Source, ReplicaSet: p.ReplicaSet, PodTemplateHash: p.Hash, Revision: p.Revision, Images: p.Images}
	}
	for _, s := range pv.Steps {
		d.Steps = append(d.Steps, planStepView{Name: s.Name, State: string(s.State), Idempotent: s.Idempotent, Description: s.Description})
	}
	return d
}
