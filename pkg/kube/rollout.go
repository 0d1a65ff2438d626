package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RolloutStatus is a Deployment's progress as `kubectl rollout status`
// judges it.
type RolloutStatus struct {
	Namespace, Name    string
	Generation         int64
	ObservedGeneration int64
	Spec               int32 // spec.replicas
	Replicas           int32 // status.replicas (old and new Pods)
	Updated            int32
	Ready              int32
	Available          int32
	// Terminating is status.terminatingReplicas: Pods being deleted, which
	// may still run (and write) until their grace period ends. Known is
	// false on a cluster that does not report it (before Kubernetes 1.34,
	// or with the DeploymentReplicaSetTerminatingReplicas gate off).
	Terminating      int32
	TerminatingKnown bool
	Complete         bool
	ProgressDeadline bool // Progressing=False, ProgressDeadlineExceeded
	Message          string
	ObservedAt       time.Time
}

// Status evaluates dep by kubectl's rollout criteria: generation observed,
// Progressing not ProgressDeadlineExceeded, and updated == spec ==
// replicas == available.
func Status(dep *appsv1.Deployment) RolloutStatus {
	s := RolloutStatus{
		Namespace:          dep.Namespace,
		Name:               dep.Name,
		Generation:         dep.Generation,
		ObservedGeneration: dep.Status.ObservedGeneration,
		Spec:               Replicas(dep),
		Replicas:           dep.Status.Replicas,
		Updated:            dep.Status.UpdatedReplicas,
		Ready:              dep.Status.ReadyReplicas,
		Available:          dep.Status.AvailableReplicas,
	}
	if t := dep.Status.TerminatingReplicas; t != nil {
		s.Terminating, s.TerminatingKnown = *t, true
	}
	if dep.Generation > dep.Status.ObservedGeneration {
		s.Message = "waiting for the spec update to be observed"
		return s
	}
	for _, c := range dep.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == timedOutReason {
			s.ProgressDeadline = true
			s.Message = "progress deadline exceeded"
			return s
		}
	}
	switch {
	case s.Updated < s.Spec:
		s.Message = fmt.Sprintf("%d of %d new replicas updated", s.Updated, s.Spec)
	case s.Replicas > s.Updated:
		s.Message = fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.Updated)
	case s.Available < s.Updated:
		s.Message = fmt.Sprintf("%d of %d updated replicas available", s.Available, s.Updated)
	default:
		s.Complete = true
		s.Message = "successfully rolled out"
	}
	return s
}

// WaitOptions tune WaitRollout.
type WaitOptions struct {
	// Timeout bounds the whole wait (required; the ctx deadline also
	// applies).
	Timeout time.Duration
	// Progress, if set, is called with each status that differs from the
	// previous one. It must not block.
	Progress func(RolloutStatus)
	// Check, if set, is called with every Deployment read; an error stops
	// the wait (rollguard uses it to notice a concurrent change).
	Check func(*appsv1.Deployment) error
	// NoPods also waits until no Pod of the Deployment is left, terminating
	// ones included: a Pod being deleted is no longer counted by the
	// rollout criteria but may keep running, and writing to its database,
	// for its whole grace period. Where the cluster does not report
	// terminating Pods, the wait lasts the template's
	// terminationGracePeriodSeconds from its start instead.
	NoPods bool
}

// WaitRollout reads the Deployment until its rollout is complete, the
// progress deadline is exceeded, Check fails or the timeout passes. It
// re-reads on every watch event of the Deployment, so it sees the end of a
// rollout at once, and also every PollInterval: the poll is the ground
// truth (it survives watch expiry and API restarts with no resourceVersion
// bookkeeping), the watch only wakes it early.
func (d *Deployments) WaitRollout(ctx context.Context, ns, name string, o WaitOptions) (*appsv1.Deployment, RolloutStatus, error) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	var last RolloutStatus
	var lastDep *appsv1.Deployment
	first := true
	began := d.opts.Now()
	tick := time.NewTicker(d.opts.PollInterval)
	defer tick.Stop()
	wake := make(chan struct{}, 1)
	if w, err := d.client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name}); err == nil {
		defer w.Stop() // closes ResultChan, which ends the goroutine
		go func() {
			for range w.ResultChan() {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
	}
	for {
		dep, err := d.Get(ctx, ns, name)
		switch {
		case err == nil:
			lastDep = dep
			if o.Check != nil {
				if err := o.Check(dep); err != nil {
					return dep, Status(dep), err
				}
			}
			s := Status(dep)
			s.ObservedAt = d.opts.Now()
			if o.NoPods {
				noPods(&s, dep, s.ObservedAt.Sub(began))
			}
			if first || !sameProgress(s, last) {
				d.logger.Debug("rollout progress", zap.String("namespace", ns), zap.String("deployment", name), zap.String("status", s.Message))
				if o.Progress != nil {
					o.Progress(s)
				}
			}
			first = false
			last = s
			if s.Complete {
				return dep, s, nil
			}
			if s.ProgressDeadline {
				return dep, s, fmt.Errorf("rollout of deployment %s/%s: %w", ns, name, ErrProgressDeadline)
			}
		case ctx.Err() != nil:
			// fall through to the deadline below
		default:
			// A failed read is retried until the deadline: the API server
			// may be restarting.
			d.logger.Warn("rollout status read failed, retrying", zap.String("namespace", ns), zap.String("deployment", name), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return lastDep, last, fmt.Errorf("rollout of deployment %s/%s (%s): %w", ns, name, last.Message, ErrRolloutTimeout)
			}
			return lastDep, last, fmt.Errorf("rollout of deployment %s/%s: %w", ns, name, ctx.Err())
		case <-tick.C:
		case <-wake:
		}
	}
}

// noPods holds back a complete s while Pods may still run: counted ones
// (kubectl's criteria call a scale-down of the current ReplicaSet complete
// before its Pods are even deleted), terminating ones reported, or, where
// the cluster cannot tell, until the grace period has passed since the wait
// began.
func noPods(s *RolloutStatus, dep *appsv1.Deployment, waited time.Duration) {
	if !s.Complete {
		return
	}
	if s.Replicas > s.Spec {
		s.Complete = false
		s.Message = fmt.Sprintf("%d pods left of %d", s.Replicas, s.Spec)
		return
	}
	if s.TerminatingKnown {
		if s.Terminating > 0 {
			s.Complete = false
			s.Message = fmt.Sprintf("%d pods terminating", s.Terminating)
		}
		return
	}
	if grace := GracePeriod(dep); waited < grace {
		s.Complete = false
		s.Message = fmt.Sprintf("terminating pods not reported by the cluster: waiting out the %s grace period", grace)
	}
}

// GracePeriod is how long the Deployment's Pods may run after their
// deletion: the template's terminationGracePeriodSeconds (default 30s).
func GracePeriod(dep *appsv1.Deployment) time.Duration {
	if g := dep.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
}

func sameProgress(a, b RolloutStatus) bool {
	a.ObservedAt, b.ObservedAt = time.Time{}, time.Time{}
	return a == b
}
