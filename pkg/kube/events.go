package kube

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Event reasons rollguard records on a Deployment.
const (
	ReasonPlanStarted   = "RollbackStarted"
	ReasonStepStarted   = "RollbackStepStarted"
	ReasonStepSucceeded = "RollbackStepSucceeded"
	ReasonStepFailed    = "RollbackStepFailed"
	ReasonPlanSucceeded = "RollbackSucceeded"
	ReasonPlanFailed    = "RollbackFailed"
)

// RecordEvent creates a core/v1 Event on dep. It is a direct, synchronous
// create rather than client-go's EventRecorder: the recorder's broadcaster
// drops and aggregates events in the background, and a rollback's steps
// should appear in `kubectl describe` one by one, in order, or fail loudly
// in the log.
func (d *Deployments) RecordEvent(ctx context.Context, dep *appsv1.Deployment, eventType, reason, message string) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	now := metav1.NewTime(d.opts.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			// The server picks a unique suffix: two steps may start within
			// the same clock tick.
			GenerateName: dep.Name + ".",
			Namespace:    dep.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion:      "apps/v1",
			Kind:            "Deployment",
			Namespace:       dep.Namespace,
			Name:            dep.Name,
			UID:             dep.UID,
			ResourceVersion: dep.ResourceVersion,
		},
		Reason:              reason,
		Message:             truncate(message, 1024),
		Type:                eventType,
		Source:              corev1.EventSource{Component: d.opts.Component, Host: d.opts.Instance},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: d.opts.Component,
		ReportingInstance:   d.opts.Instance,
	}
	if _, err := d.client.CoreV1().Events(dep.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create event %s on deployment %s/%s: %w", reason, dep.Namespace, dep.Name, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
