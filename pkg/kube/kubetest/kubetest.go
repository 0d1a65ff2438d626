// Package kubetest makes client-go's fake clientset behave enough like an
// API server and a Deployment controller for rollguard's unit tests:
// resourceVersions are kept and checked (a stale one gives 409), the scale
// subresource works, and a spec change of a Deployment is rolled out at once
// (ReplicaSets with revisions and pod-template-hash, status complete), the
// way the real controller ends up.
package kubetest

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var (
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	replicaSetsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
)

// Cluster is a fake clientset with an API-server-like resourceVersion and a
// synchronous Deployment controller.
type Cluster struct {
	*fake.Clientset

	mu sync.Mutex
	rv int64
	// Rollout, when false, leaves the status of a changed Deployment
	// unobserved (generation > observedGeneration) until Complete is called.
	Rollout bool
	// Now, when set, stamps the creationTimestamp of new ReplicaSets (the
	// deploy time the interlocks and the dump checks read).
	Now func() time.Time
}

// New returns a Cluster holding objs.
func New(objs ...runtime.Object) *Cluster {
	c := &Cluster{Clientset: fake.NewSimpleClientset(), Rollout: true}
	c.PrependReactor("*", "*", c.react)
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			if _, err := c.create(deploymentsGVR, o.Namespace, o); err != nil {
				panic(err)
			}
		default:
			if err := c.Tracker().Add(o); err != nil {
				panic(err)
			}
		}
	}
	return c
}

func (c *Cluster) nextRV() string {
	c.rv++
	return strconv.FormatInt(c.rv, 10)
}

// Writes returns the actions that are not get, list or watch.
func (c *Cluster) Writes() []k8stesting.Action {
	var out []k8stesting.Action
	for _, a := range c.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
		default:
			out = append(out, a)
		}
	}
	return out
}

// Deployment returns the stored Deployment.
func (c *Cluster) Deployment(ns, name string) *appsv1.Deployment {
	o, err := c.Tracker().Get(deploymentsGVR, ns, name)
	if err != nil {
		panic(err)
	}
	return o.(*appsv1.Deployment)
}

// Mutate changes a stored Deployment the way another client would (new
// resourceVersion, generation bumped on a spec change, rolled out when
// Rollout is set).
func (c *Cluster) Mutate(ns, name string, f func(*appsv1.Deployment)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.Deployment(ns, name).DeepCopy()
	f(d)
	d.ResourceVersion = ""
	if _, err := c.updateDeployment(ns, d); err != nil {
		panic(err)
	}
}

// Complete rolls out the Deployment now (for tests that set Rollout false).
func (c *Cluster) Complete(ns, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.Deployment(ns, name).DeepCopy()
	if err := c.controller(d); err != nil {
		panic(err)
	}
	d.ResourceVersion = c.nextRV()
	if err := c.Tracker().Update(deploymentsGVR, d, ns); err != nil {
		panic(err)
	}
}

func (c *Cluster) react(action k8stesting.Action) (bool, runtime.Object, error) {
	res := action.GetResource().Resource
	sub := action.GetSubresource()
	switch {
	case res == "deployments" && sub == "scale":
		return c.reactScale(action)
	case sub != "":
		return false, nil, nil
	}
	// CreateAction and UpdateAction have the same method set, so branch on
	// the verb, not the type.
	switch action.GetVerb() {
	case "create":
		a := action.(k8stesting.CreateAction)
		c.mu.Lock()
		defer c.mu.Unlock()
		o, err := c.create(action.GetResource(), action.GetNamespace(), a.GetObject())
		return true, o, err
	case "update":
		a := action.(k8stesting.UpdateAction)
		c.mu.Lock()
		defer c.mu.Unlock()
		if res == "deployments" {
			o, err := c.updateDeployment(action.GetNamespace(), a.GetObject().(*appsv1.Deployment).DeepCopy())
			return true, o, err
		}
		o, err := c.update(action.GetResource(), action.GetNamespace(), a.GetObject())
		return true, o, err
	}
	return false, nil, nil
}

func (c *Cluster) create(gvr schema.GroupVersionResource, ns string, obj runtime.Object) (runtime.Object, error) {
	obj = obj.DeepCopyObject()
	m, err := metaOf(obj)
	if err != nil {
		return nil, err
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + strconv.FormatInt(c.rv+1, 36))
	}
	if _, err := c.Tracker().Get(gvr, ns, m.GetName()); err == nil {
		return nil, apierrors.NewAlreadyExists(gvr.GroupResource(), m.GetName())
	}
	if m.GetUID() == "" {
		m.SetUID(types.UID(fmt.Sprintf("uid-%s-%d", m.GetName(), c.rv+1)))
	}
	m.SetResourceVersion(c.nextRV())
	if d, ok := obj.(*appsv1.Deployment); ok {
		d.Generation = 1
		if d.Spec.Replicas == nil {
			one := int32(1)
			d.Spec.Replicas = &one
		}
		if c.Rollout {
			if err := c.controller(d); err != nil {
				return nil, err
			}
		}
	}
	if err := c.Tracker().Create(gvr, obj, ns); err != nil {
		return nil, err
	}
	return obj, nil
}

func (c *Cluster) update(gvr schema.GroupVersionResource, ns string, obj runtime.Object) (runtime.Object, error) {
	obj = obj.DeepCopyObject()
	m, err := metaOf(obj)
	if err != nil {
		return nil, err
	}
	old, err := c.Tracker().Get(gvr, ns, m.GetName())
	if err != nil {
		return nil, err
	}
	om, _ := metaOf(old)
	if m.GetResourceVersion() != "" && m.GetResourceVersion() != om.GetResourceVersion() {
		return nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(), fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
	}
	m.SetUID(om.GetUID())
	m.SetResourceVersion(c.nextRV())
	if err := c.Tracker().Update(gvr, obj, ns); err != nil {
		return nil, err
	}
	return obj, nil
}

// updateDeployment is update plus generation and the controller.
func (c *Cluster) updateDeployment(ns string, d *appsv1.Deployment) (*appsv1.Deployment, error) {
	oldObj, err := c.Tracker().Get(deploymentsGVR, ns, d.Name)
	if err != nil {
		return nil, err
	}
	old := oldObj.(*appsv1.Deployment)
	if d.ResourceVersion != "" && d.ResourceVersion != old.ResourceVersion {
		return nil, apierrors.NewConflict(deploymentsGVR.GroupResource(), d.Name, fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
	}
	d.UID = old.UID
	d.Generation = old.Generation
	// Status is a subresource: a spec update never changes it.
	d.Status = old.Status
	if !apiequality.Semantic.DeepEqual(d.Spec, old.Spec) {
		d.Generation++
		if c.Rollout {
			if err := c.controller(d); err != nil {
				return nil, err
			}
		}
	}
	d.ResourceVersion = c.nextRV()
	if err := c.Tracker().Update(deploymentsGVR, d, ns); err != nil {
		return nil, err
	}
	return d, nil
}

func (c *Cluster) reactScale(action k8stesting.Action) (bool, runtime.Object, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := action.GetNamespace()
	switch action.GetVerb() {
	case "get":
		o, err := c.Tracker().Get(deploymentsGVR, ns, action.(k8stesting.GetAction).GetName())
		if err != nil {
			return true, nil, err
		}
		return true, scaleOf(o.(*appsv1.Deployment)), nil
	case "update":
		s := action.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		o, err := c.Tracker().Get(deploymentsGVR, ns, s.Name)
		if err != nil {
			return true, nil, err
		}
		d := o.(*appsv1.Deployment).DeepCopy()
		if s.ResourceVersion != "" && s.ResourceVersion != d.ResourceVersion {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, s.Name, fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
		}
		r := s.Spec.Replicas
		d.Spec.Replicas = &r
		d.ResourceVersion = ""
		out, err := c.updateDeployment(ns, d)
		if err != nil {
			return true, nil, err
		}
		return true, scaleOf(out), nil
	}
	return false, nil, nil
}

func scaleOf(d *appsv1.Deployment) *autoscalingv1.Scale {
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, ResourceVersion: d.ResourceVersion, UID: d.UID},
		Spec:       autoscalingv1.ScaleSpec{Replicas: *d.Spec.Replicas},
		Status:     autoscalingv1.ScaleStatus{Replicas: d.Status.Replicas},
	}
}

// controller does what the Deployment controller converges to: the
// ReplicaSet of the current template (found by template, else created)
// becomes the newest revision with every replica, the others go to 0.
func (c *Cluster) controller(d *appsv1.Deployment) error {
	objs, err := c.Tracker().List(replicaSetsGVR, schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSet"}, d.Namespace)
	if err != nil {
		return err
	}
	var owned []*appsv1.ReplicaSet
	var maxRev int64
	for i := range objs.(*appsv1.ReplicaSetList).Items {
		rs := &objs.(*appsv1.ReplicaSetList).Items[i]
		if len(rs.OwnerReferences) == 0 || rs.OwnerReferences[0].UID != d.UID {
			continue
		}
		owned = append(owned, rs)
		if r, err := strconv.ParseInt(rs.Annotations["deployment.kubernetes.io/revision"], 10, 64); err == nil && r > maxRev {
			maxRev = r
		}
	}
	hash := templateHash(&d.Spec.Template)
	replicas := *d.Spec.Replicas
	var current *appsv1.ReplicaSet
	for _, rs := range owned {
		if rs.Labels["pod-template-hash"] == hash {
			current = rs
			continue
		}
		if rs.Spec.Replicas == nil || *rs.Spec.Replicas != 0 {
			zero := int32(0)
			rs.Spec.Replicas = &zero
			rs.Status = appsv1.ReplicaSetStatus{ObservedGeneration: rs.Generation}
			rs.ResourceVersion = c.nextRV()
			if err := c.Tracker().Update(replicaSetsGVR, rs, d.Namespace); err != nil {
				return err
			}
		}
	}
	if current == nil {
		tmpl := d.Spec.Template.DeepCopy()
		if tmpl.Labels == nil {
			tmpl.Labels = map[string]string{}
		}
		tmpl.Labels["pod-template-hash"] = hash
		yes := true
		current = &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{
				Name:            d.Name + "-" + hash,
				Namespace:       d.Namespace,
				UID:             types.UID("uid-rs-" + d.Name + "-" + hash),
				Labels:          tmpl.Labels,
				Annotations:     map[string]string{"deployment.kubernetes.io/revision": strconv.FormatInt(maxRev+1, 10)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: &yes}},
				ResourceVersion: c.nextRV(),
			},
			Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: d.Spec.Selector, Template: *tmpl},
		}
		current.Status = appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas}
		if c.Now != nil {
			current.CreationTimestamp = metav1.NewTime(c.Now())
		}
		if err := c.Tracker().Create(replicaSetsGVR, current, d.Namespace); err != nil {
			return err
		}
	} else {
		rev, _ := strconv.ParseInt(current.Annotations["deployment.kubernetes.io/revision"], 10, 64)
		if rev != maxRev {
			current.Annotations["deployment.kubernetes.io/revision"] = strconv.FormatInt(maxRev+1, 10)
		}
		current.Spec.Replicas = &replicas
		current.Status = appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas}
		current.ResourceVersion = c.nextRV()
		if err := c.Tracker().Update(replicaSetsGVR, current, d.Namespace); err != nil {
			return err
		}
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations["deployment.kubernetes.io/revision"] = current.Annotations["deployment.kubernetes.io/revision"]
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		// The fake's Pods go at once, as Kubernetes ≥ 1.34 reports it.
		TerminatingReplicas: new(int32),
		Replicas:            replicas,
		UpdatedReplicas:     replicas,
		ReadyReplicas:       replicas,
		AvailableReplicas:   replicas,
		Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue},
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"},
		},
	}
	return nil
}

// templateHash is a stand-in for the controller's hash: stable per
// template, different for different templates.
func templateHash(t *corev1.PodTemplateSpec) string {
	cp := t.DeepCopy()
	delete(cp.Labels, "pod-template-hash")
	h := fnv.New32a()
	fmt.Fprintf(h, "%#v", cp.Spec.Containers)
	fmt.Fprintf(h, "%v", cp.Annotations)
	fmt.Fprintf(h, "%v", cp.Labels)
	return strconv.FormatUint(uint64(h.Sum32()), 36)
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// NewDeployment builds a Deployment with one container per image
// (name -> image) and the given replica count.
func NewDeployment(ns, name string, replicas int32, images map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	var containers []corev1.Container
	for _, n := range sortedKeys(images) {
		containers = append(containers, corev1.Container{Name: n, Image: images[n]})
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: containers},
			},
		},
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
