// Package sandboxfixture holds what integration tests share on the sandbox:
// a clientset from its admin kubeconfig, a namespace of the test's own, a
// pggit-api-shaped Deployment rolled through images (and kubectl's test of
// a finished rollout), the simulator's fault profiles, random suffixes and
// free ports that keep tests apart, the example config's queries and its
// secret files, a polling wait with a deadline, one-sample Prometheus
// queries, a Prometheus and an Alertmanager of the test's own.
package sandboxfixture

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// SimulateLabel marks a Deployment the pggit-api simulator serves traffic for.
const SimulateLabel = "pggitsim.rollguard.io/simulate"

// RolloutTimeout bounds each wait in RollThrough.
const RolloutTimeout = 60 * time.Second

// KubeConfig is the REST config of the sandbox's admin kubeconfig. QPS and
// Burst are raised so that polling tests are not throttled client-side.
func KubeConfig(t testing.TB, env sandboxenv.Env) *rest.Config {
	t.Helper()
	path := env.Get(t, "KUBECONFIG")
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	rc.QPS, rc.Burst = 100, 200
	return rc
}

// Kube is a clientset for KubeConfig.
func Kube(t testing.TB, env sandboxenv.Env) kubernetes.Interface {
	t.Helper()
	return ClientFor(t, KubeConfig(t, env))
}

// ClientFor is a clientset for rc, for callers that adjust the config.
func ClientFor(t testing.TB, rc *rest.Config) kubernetes.Interface {
	t.Helper()
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatalf("kubernetes client for %s: %v", rc.Host, err)
	}
	return client
}

// Namespace creates namespace ns and deletes it when the test ends.
func Namespace(t testing.TB, kc kubernetes.Interface, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		// Namespace deletion takes ~10 s: ask for it, do not wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := kc.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Logf("cleanup: delete namespace %s: %v", ns, err)
		}
	})
}

// Deployment is Deployment ns/name with one container "api" running image,
// selected by app=name. It is not simulated; see Simulated.
func Deployment(ns, name, image string, replicas int32) *appsv1.Deployment {
	return kubetest.NewDeployment(ns, name, replicas, map[string]string{"api": image})
}

// Simulated labels d so that the simulator serves traffic for its Ready
// Pods, and returns it.
func Simulated(d *appsv1.Deployment) *appsv1.Deployment {
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.Labels[SimulateLabel] = "true"
	return d
}

// CreateDeployment creates d.
func CreateDeployment(t testing.TB, kc kubernetes.Interface, d *appsv1.Deployment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := kc.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment %s/%s: %v", d.Namespace, d.Name, err)
	}
}

// SetImage sets the image of the first container of Deployment ns/name,
// retrying on update conflicts (the controller writes status meanwhile).
func SetImage(t testing.TB, kc kubernetes.Interface, ns, name, image string) {
	t.Helper()
	UpdateDeployment(t, kc, ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = image })
}

// UpdateDeployment applies change to the current Deployment ns/name and
// writes it, as a human's kubectl edit would, reading it again on an
// update conflict. It returns the Deployment as written, whose
// resourceVersion can start a watch.
func UpdateDeployment(t testing.TB, kc kubernetes.Interface, ns, name string, change func(*appsv1.Deployment)) *appsv1.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		d, err := kc.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get deployment %s/%s: %v", ns, name, err)
		}
		change(d)
		out, err := kc.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			t.Fatalf("update deployment %s/%s: %v", ns, name, err)
		}
		return out
	}
}

// RolledOut says, by kubectl rollout status's criteria (pkg/kube's
// Status) and with every Pod ready, whether d's rollout is complete, and
// describes its progress for a wait's message.
func RolledOut(d *appsv1.Deployment) (bool, string) {
	st := kube.Status(d)
	return st.Complete && st.Ready == st.Spec, fmt.Sprintf("spec %d updated %d replicas %d ready %d available %d (generation %d observed %d): %s",
		st.Spec, st.Updated, st.Replicas, st.Ready, st.Available, st.Generation, st.ObservedGeneration, st.Message)
}

// WaitRolledOut waits, by kubectl's criteria, for the rollout of
// Deployment ns/name to complete.
func WaitRolledOut(t testing.TB, deps *kube.Deployments, ns, name string) {
	t.Helper()
	if _, st, err := deps.WaitRollout(context.Background(), ns, name, kube.WaitOptions{Timeout: RolloutTimeout}); err != nil {
		t.Fatalf("rollout of %s/%s: %v (%+v)", ns, name, err, st)
	}
}

// RollThrough waits for the rollout of the created Deployment ns/name, then
// sets each further image in turn and waits for that rollout too, so the
// Deployment ends on the last image with a ReplicaSet history behind it.
func RollThrough(t testing.TB, kc kubernetes.Interface, deps *kube.Deployments, ns, name string, images ...string) {
	t.Helper()
	WaitRolledOut(t, deps, ns, name)
	for _, img := range images {
		SetImage(t, kc, ns, name, img)
		WaitRolledOut(t, deps, ns, name)
	}
}
