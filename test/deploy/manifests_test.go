package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollguard/rollguard/pkg/config"
)

// The overlays carry copies of configs/*.yaml because kustomize cannot read
// files outside an overlay's directory; the copies must not drift.
func TestOverlayConfigIsCopyOfConfigs(t *testing.T) {
	root := repoRoot(t)
	for _, o := range overlays() {
		t.Run(o.name, func(t *testing.T) {
			src := filepath.Join("configs", o.config)
			dst := filepath.Join("deploy", "overlays", o.name, configKey)
			want, err := os.ReadFile(filepath.Join(root, src))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(root, dst))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s (%s): copy it: cp %s %s", dst, src, firstDiff(got, want), src, dst)
			}
			for _, p := range []string{src, dst} {
				if _, err := config.LoadFile(filepath.Join(root, p)); err != nil {
					t.Errorf("config.LoadFile(%s): %v", p, err)
				}
			}

			// What reaches the pod is the rendered ConfigMap, under the
			// name the Deployment mounts (no hash suffix, so edits reload
			// in place).
			objs := render(t, filepath.Join("deploy", "overlays", o.name))
			cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", installNamespace, configMapName))
			if keys := sortedKeys(cm.Data); !slices.Equal(keys, []string{configKey}) {
				t.Errorf("ConfigMap %s data keys = %v, want [%s]", configMapName, keys, configKey)
			}
			if cm.Data[configKey] != string(want) {
				t.Errorf("rendered ConfigMap %s/%s is not %s", installNamespace, configMapName, src)
			}
		})
	}
}

// firstDiff names the first line where two files differ, to make the
// failure actionable without a diff tool.
func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("first at line %d: %q, want %q", i+1, gl, wl)
		}
	}
	return "line endings differ"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// renderedInstall is one overlay rendered, with the objects the checks
// look at most.
type renderedInstall struct {
	objs []*unstructured.Unstructured
	dep  *appsv1.Deployment
	ctr  corev1.Container
	cfg  *config.Config
}

func renderInstall(t *testing.T, o overlay) renderedInstall {
	t.Helper()
	objs := render(t, filepath.Join("deploy", "overlays", o.name))
	dep := typed[appsv1.Deployment](t, find(t, objs, "Deployment", installNamespace, deploymentName))
	var ctr corev1.Container
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "rollguard" {
			ctr = c
		}
	}
	if ctr.Name == "" {
		t.Fatalf("Deployment %s has no container named rollguard", deploymentName)
	}
	cfg, err := config.LoadFile(filepath.Join(repoRoot(t), "deploy", "overlays", o.name, configKey))
	if err != nil {
		t.Fatalf("load the overlay's config: %v", err)
	}
	return renderedInstall{objs: objs, dep: dep, ctr: ctr, cfg: cfg}
}

// The Deployment's pods must be admitted where Pod Security "restricted" is
// enforced (the rollguard namespace enforces it), and keep the root
// filesystem read-only as the issue asks.
func TestDeploymentMeetsRestricted(t *testing.T) {
	for _, o := range overlays() {
		t.Run(o.name, func(t *testing.T) {
			in := renderInstall(t, o)
			if v := restrictedViolations(&in.dep.Spec.Template.Spec); len(v) > 0 {
				t.Errorf("Deployment %s breaks Pod Security restricted:\n  %s", deploymentName, strings.Join(v, "\n  "))
			}
			for _, c := range in.dep.Spec.Template.Spec.Containers {
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("container %q: readOnlyRootFilesystem is not true", c.Name)
				}
			}
			ns := typed[corev1.Namespace](t, find(t, in.objs, "Namespace", "", installNamespace))
			if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
				t.Errorf("Namespace %s enforces Pod Security %q, want restricted", installNamespace, got)
			}
		})
	}
}

// The checker above must see each breach; otherwise the test above could
// pass on anything.
func TestRestrictedViolationsCatchesBreaches(t *testing.T) {
	base := renderInstall(t, overlays()[0]).dep.Spec.Template.Spec
	if v := restrictedViolations(&base); len(v) > 0 {
		t.Fatalf("the production pod spec must be clean to mutate it: %v", v)
	}
	yes, no := true, false
	root := int64(0)
	unmasked := corev1.UnmaskedProcMount
	tests := []struct {
		name   string
		mutate func(s *corev1.PodSpec)
		want   []string
	}{
		{"host network", func(s *corev1.PodSpec) { s.HostNetwork = true }, []string{"hostNetwork is true"}},
		{"host PID", func(s *corev1.PodSpec) { s.HostPID = true }, []string{"hostPID is true"}},
		{"hostPath volume", func(s *corev1.PodSpec) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, []string{`volume "host" is not of a type restricted allows (configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret)`}},
		{"pod runs as root", func(s *corev1.PodSpec) { s.SecurityContext.RunAsUser = &root }, []string{"pod runAsUser is 0"}},
		{"no runAsNonRoot", func(s *corev1.PodSpec) { s.SecurityContext.RunAsNonRoot = nil }, []string{`container "rollguard" runs without runAsNonRoot: true (pod or container)`}},
		{"container runAsNonRoot false", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.RunAsNonRoot = &no }, []string{`container "rollguard" sets runAsNonRoot: false`}},
		{"no seccomp", func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = nil }, []string{`container "rollguard" has no seccompProfile (pod or container)`}},
		{"unconfined seccomp", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, []string{`container "rollguard" seccompProfile.type is Unconfined, want RuntimeDefault or Localhost`}},
		{"privilege escalation unset", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil }, []string{`container "rollguard" does not set allowPrivilegeEscalation: false`}},
		{"privileged", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Privileged = &yes
			s.Containers[0].SecurityContext.AllowPrivilegeEscalation = &yes
		}, []string{`container "rollguard" is privileged`, `container "rollguard" does not set allowPrivilegeEscalation: false`}},
		{"capabilities not dropped", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Capabilities = nil }, []string{`container "rollguard" does not drop ALL capabilities`}},
		{"capability added", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE", "SYS_ADMIN"}
		}, []string{`container "rollguard" adds capability SYS_ADMIN`}},
		{"host port", func(s *corev1.PodSpec) { s.Containers[0].Ports[0].HostPort = 9847 }, []string{`container "rollguard" uses hostPort 9847`}},
		{"unmasked proc", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.ProcMount = &unmasked }, []string{`container "rollguard" procMount is Unmasked`}},
		{"init container without context", func(s *corev1.PodSpec) {
			s.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
		}, []string{`init container "init" does not set allowPrivilegeEscalation: false`, `init container "init" does not drop ALL capabilities`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base.DeepCopy()
			tt.mutate(s)
			if got := restrictedViolations(s); !slices.Equal(got, tt.want) {
				t.Errorf("violations = %q, want %q", got, tt.want)
			}
		})
	}
}

// The Deployment and the config it mounts must agree: the flags, the port,
// the paths the daemon reads and writes, and leader election.
func TestDeploymentMatchesConfig(t *testing.T) {
	for _, o := range overlays() {
		t.Run(o.name, func(t *testing.T) {
			in := renderInstall(t, o)
			spec := in.dep.Spec.Template.Spec
			g := in.cfg.Global

			if got := ptrVal(in.dep.Spec.Replicas, 1); got != o.replicas {
				t.Errorf("replicas = %d, want %d", got, o.replicas)
			}
			if ptrVal(in.dep.Spec.Replicas, 1) > 1 && !g.LeaderElection.Enabled {
				t.Errorf("%d replicas without leader election: every replica would act", ptrVal(in.dep.Spec.Replicas, 1))
			}
			if g.LeaderElection.Enabled {
				if g.LeaderElection.Namespace != installNamespace {
					t.Errorf("leaderElection.namespace = %q, want %q (where the leader Role grants leases)", g.LeaderElection.Namespace, installNamespace)
				}
				role := typed[rbacv1.Role](t, find(t, in.objs, "Role", installNamespace, leaderRole))
				if !grants(role.Rules, "coordination.k8s.io", "leases", g.LeaderElection.LeaseName, "update") {
					t.Errorf("Role %s does not grant update on lease %q", leaderRole, g.LeaderElection.LeaseName)
				}
				if !hasEnv(in.ctr, "POD_NAME") {
					t.Errorf("container has no POD_NAME env: leader identity must be unique per pod")
				}
			}
			if spec.ServiceAccountName != serviceAccount {
				t.Errorf("serviceAccountName = %q, want %q", spec.ServiceAccountName, serviceAccount)
			}
			if g.Kubernetes.Kubeconfig == "" {
				sa := typed[corev1.ServiceAccount](t, find(t, in.objs, "ServiceAccount", installNamespace, serviceAccount))
				if (sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken) ||
					(spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken) {
					t.Errorf("the config uses the in-cluster identity but the token is not mounted")
				}
			}

			// The config file the daemon is told to read is the mounted key.
			cfgMount, ok := mountOfVolume(spec, in.ctr, func(v corev1.VolumeSource) bool {
				return v.ConfigMap != nil && v.ConfigMap.Name == configMapName
			})
			if !ok {
				t.Fatalf("ConfigMap %s is not mounted", configMapName)
			}
			if want := "--config=" + path.Join(cfgMount.MountPath, configKey); !slices.Contains(in.ctr.Args, want) {
				t.Errorf("args = %q, want %s", in.ctr.Args, want)
			}

			// The port the daemon listens on is the named port the probes,
			// the Service and the NetworkPolicy use.
			_, port, err := net.SplitHostPort(g.ListenAddress)
			if err != nil {
				t.Fatalf("listenAddress %q: %v", g.ListenAddress, err)
			}
			host, _, _ := net.SplitHostPort(g.ListenAddress)
			if host != "0.0.0.0" && host != "" && host != "::" {
				t.Errorf("listenAddress %q: in a pod it must listen on every interface for probes and scrapes", g.ListenAddress)
			}
			if len(in.ctr.Ports) != 1 || in.ctr.Ports[0].Name != "http" || fmt.Sprint(in.ctr.Ports[0].ContainerPort) != port {
				t.Errorf("container ports = %+v, want one named http on %s", in.ctr.Ports, port)
			}
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{{"readiness", in.ctr.ReadinessProbe, "/readyz"}, {"liveness", in.ctr.LivenessProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromString("http") {
					t.Errorf("%s probe = %+v, want HTTP GET %s on port http", p.name, p.probe, p.path)
				}
			}
			for _, r := range []struct {
				what string
				list corev1.ResourceList
				name corev1.ResourceName
			}{
				{"requests", in.ctr.Resources.Requests, corev1.ResourceCPU},
				{"requests", in.ctr.Resources.Requests, corev1.ResourceMemory},
				{"limits", in.ctr.Resources.Limits, corev1.ResourceMemory},
			} {
				if q, ok := r.list[r.name]; !ok || q.IsZero() {
					t.Errorf("resources.%s.%s is not set", r.what, r.name)
				}
			}

			// Secrets come from files in the Secret's mount.
			secMount, ok := mountOfVolume(spec, in.ctr, func(v corev1.VolumeSource) bool {
				return v.Secret != nil && v.Secret.SecretName == secretName
			})
			if !ok {
				t.Fatalf("Secret %s is not mounted", secretName)
			}
			for _, f := range secretFiles(in.cfg) {
				if path.Dir(f) != secMount.MountPath {
					t.Errorf("secret file %s is not in the mount of Secret %s (%s)", f, secretName, secMount.MountPath)
				}
			}

			// The root filesystem is read-only: whatever the daemon writes
			// must be on a writable volume, and what a live rollback writes
			// (forensic dumps) or reads (the pre-deploy dump written by the
			// deploy pipeline) must outlive the pod.
			for _, w := range writablePaths(in.cfg) {
				m, vol, ok := mountOfPath(spec, in.ctr, w.path)
				switch {
				case !ok:
					t.Errorf("%s %s is on the read-only root filesystem", w.what, w.path)
				case m.ReadOnly:
					t.Errorf("%s %s is on read-only mount %s", w.what, w.path, m.MountPath)
				case w.persistent && vol.PersistentVolumeClaim == nil:
					t.Errorf("%s %s is on volume %q, which is lost with the pod: a live database rollback needs a PersistentVolumeClaim there", w.what, w.path, vol.Name)
				}
			}
		})
	}
}

func labelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return nil, fmt.Errorf("empty selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}

func ptrVal[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func hasEnv(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// mountOfVolume finds the container's mount of the volume that matches.
func mountOfVolume(spec corev1.PodSpec, c corev1.Container, match func(corev1.VolumeSource) bool) (corev1.VolumeMount, bool) {
	for _, v := range spec.Volumes {
		if !match(v.VolumeSource) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				return m, true
			}
		}
	}
	return corev1.VolumeMount{}, false
}

// mountOfPath finds the deepest mount holding p, and its volume.
func mountOfPath(spec corev1.PodSpec, c corev1.Container, p string) (corev1.VolumeMount, corev1.Volume, bool) {
	var best corev1.VolumeMount
	for _, m := range c.VolumeMounts {
		if (p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) && len(m.MountPath) > len(best.MountPath) {
			best = m
		}
	}
	if best.Name == "" {
		return best, corev1.Volume{}, false
	}
	for _, v := range spec.Volumes {
		if v.Name == best.Name {
			return best, v, true
		}
	}
	return best, corev1.Volume{}, false
}

// secretFiles lists every secret file the config names.
func secretFiles(cfg *config.Config) []string {
	var files []string
	add := func(f string) {
		if f != "" {
			files = append(files, f)
		}
	}
	for _, d := range cfg.Global.Databases {
		add(d.DSNFile)
	}
	add(cfg.Global.API.TokenFile)
	add(cfg.Global.Notify.PagerDuty.RoutingKeyFile)
	add(cfg.Global.Notify.PagerDuty.SecurityRoutingKeyFile)
	add(cfg.Global.Notify.Slack.WebhookURLFile)
	return files
}

type writable struct {
	what       string
	path       string
	persistent bool
}

// writablePaths lists where the daemon writes; persistent marks what a
// live (not dry-run) database rollback needs kept across pods.
func writablePaths(cfg *config.Config) []writable {
	out := []writable{{what: "notify.incidentDir", path: cfg.Global.Notify.IncidentDir}}
	for _, tg := range cfg.Targets {
		db := tg.Rollback.Database
		if db == nil {
			continue
		}
		live := !tg.DryRunEnabled()
		out = append(out,
			writable{what: "targets " + tg.Name + " rollback.database.dumpPath", path: db.DumpPath, persistent: live},
			writable{what: "targets " + tg.Name + " rollback.database.forensicDir", path: db.ForensicDir, persistent: live},
		)
	}
	return out
}

// perm is one expanded RBAC grant.
type perm struct{ group, resource, name, verb string }

func (p perm) String() string {
	r := p.resource
	if p.group != "" {
		r += "." + p.group
	}
	if p.name != "" {
		r += "/" + p.name
	}
	return p.verb + " " + r
}

func expand(rules []rbacv1.PolicyRule) []perm {
	var out []perm
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, n := range names {
					for _, v := range r.Verbs {
						out = append(out, perm{g, res, n, v})
					}
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return slices.Compact(out)
}

func perms(group, resource, name string, verbs ...string) []perm {
	var out []perm
	for _, v := range verbs {
		out = append(out, perm{group, resource, name, v})
	}
	return out
}

func grants(rules []rbacv1.PolicyRule, group, resource, name, verb string) bool {
	for _, p := range expand(rules) {
		if p.group == group && p.resource == resource && p.verb == verb && (p.name == "" || p.name == name) {
			return true
		}
	}
	return false
}

// The RBAC is exactly what rollguard's code calls, in the namespaces its
// config names, and nothing cluster-wide.
func TestRBACLeastPrivilege(t *testing.T) {
	wantTarget := slices.Concat(
		perms("apps", "deployments", "", "get", "list", "watch", "patch", "update"),
		perms("apps", "deployments/scale", "", "get", "patch", "update"),
		perms("apps", "replicasets", "", "get", "list", "watch"),
		// No database step while a Pod of the target is left.
		perms("", "pods", "", "list"),
		perms("", "events", "", "create", "patch"),
		// The executor's journal: pkg/rollback gets, creates and updates
		// its own ConfigMap; it never lists others.
		perms("", "configmaps", "", "get", "create", "update"),
	)
	wantLeader := slices.Concat(
		perms("coordination.k8s.io", "leases", "", "create"),
		perms("coordination.k8s.io", "leases", "rollguard", "get", "update"),
		perms("", "events", "", "create", "patch"),
	)
	for _, w := range [][]perm{wantTarget, wantLeader} {
		sort.Slice(w, func(i, j int) bool { return w[i].String() < w[j].String() })
	}
	forbiddenVerbs := []string{"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}

	for _, o := range overlays() {
		t.Run(o.name, func(t *testing.T) {
			in := renderInstall(t, o)
			for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
				for _, u := range ofKind(in.objs, kind) {
					t.Errorf("%s %s is rendered: rollguard gets no cluster-wide rights", kind, u.GetName())
				}
			}

			wantRoles := map[string][]perm{installNamespace + "/" + leaderRole: wantLeader}
			for _, tg := range in.cfg.Targets {
				wantRoles[tg.Namespace+"/"+targetRole] = wantTarget
			}
			gotRoles := map[string][]perm{}
			for _, u := range ofKind(in.objs, "Role") {
				role := typed[rbacv1.Role](t, u)
				key := role.Namespace + "/" + role.Name
				gotRoles[key] = expand(role.Rules)
				for _, r := range role.Rules {
					for _, field := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames} {
						if slices.Contains(field, "*") {
							t.Errorf("Role %s has a wildcard in %+v", key, r)
						}
					}
				}
				for _, p := range gotRoles[key] {
					switch {
					case slices.Contains(forbiddenVerbs, p.verb):
						t.Errorf("Role %s grants %s", key, p)
					case p.resource == "secrets" || strings.HasPrefix(p.resource, "pods/"):
						t.Errorf("Role %s grants %s", key, p)
					case p.resource == "pods" && p.verb != "list":
						// Listing a target's Pods is the check before a
						// restore; nothing else on Pods.
						t.Errorf("Role %s grants %s", key, p)
					}
				}
			}
			if got, want := sortedKeys(gotRoles), sortedKeys(wantRoles); !slices.Equal(got, want) {
				t.Errorf("Roles = %v, want %v (one per target namespace, and the leader's)", got, want)
			}
			for key, want := range wantRoles {
				if got, ok := gotRoles[key]; ok && !slices.Equal(got, want) {
					t.Errorf("Role %s grants\n  %v\nwant\n  %v", key, got, want)
				}
			}

			gotBindings := map[string]bool{}
			for _, u := range ofKind(in.objs, "RoleBinding") {
				rb := typed[rbacv1.RoleBinding](t, u)
				key := rb.Namespace + "/" + rb.Name
				gotBindings[key] = true
				wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: rb.Name}
				if rb.RoleRef != wantRef {
					t.Errorf("RoleBinding %s refers to %+v, want %+v", key, rb.RoleRef, wantRef)
				}
				wantSubj := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: installNamespace}}
				if !slices.Equal(rb.Subjects, wantSubj) {
					t.Errorf("RoleBinding %s binds %+v, want only %+v", key, rb.Subjects, wantSubj)
				}
			}
			if got, want := sortedKeys(gotBindings), sortedKeys(wantRoles); !slices.Equal(got, want) {
				t.Errorf("RoleBindings = %v, want %v", got, want)
			}
		})
	}
}

// The example Secret documents the keys; it is never installed, holds no
// real secret, and names every file the configs read.
func TestSecretExample(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy", "base", "secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := decodeObjects(data)
	if err != nil || len(docs) != 1 {
		t.Fatalf("secret.example.yaml: %d objects, %v; want one Secret", len(docs), err)
	}
	sec := typed[corev1.Secret](t, docs[0])
	if sec.Name != secretName || sec.Namespace != installNamespace {
		t.Errorf("example Secret is %s/%s, want %s/%s", sec.Namespace, sec.Name, installNamespace, secretName)
	}
	if len(sec.Data) > 0 {
		t.Errorf("example Secret has data %v: use placeholder stringData only", sortedKeys(sec.Data))
	}
	for k, v := range sec.StringData {
		if !strings.Contains(v, "CHANGE-ME") && !strings.Contains(v, "CHANGE/ME") {
			t.Errorf("example Secret key %s = %q does not look like a placeholder (CHANGE-ME)", k, v)
		}
	}

	for _, o := range overlays() {
		t.Run(o.name, func(t *testing.T) {
			in := renderInstall(t, o)
			for _, u := range ofKind(in.objs, "Secret") {
				t.Errorf("Secret %s/%s is rendered: secrets are created out of band", u.GetNamespace(), u.GetName())
			}
			for _, f := range secretFiles(in.cfg) {
				if _, ok := sec.StringData[path.Base(f)]; !ok {
					t.Errorf("config reads %s but the example Secret has no key %s", f, path.Base(f))
				}
			}
		})
	}
}

// The overlays own rollguard's namespace only; the targets' namespaces
// belong to the applications (kubectl delete -k must never delete them).
// The Service, PodDisruptionBudget and NetworkPolicy select the pods and
// the port.
func TestNamespaceServicePolicy(t *testing.T) {
	for _, o := range overlays() {
		t.Run(o.name, func(t *testing.T) {
			in := renderInstall(t, o)
			var nss []string
			for _, u := range ofKind(in.objs, "Namespace") {
				nss = append(nss, u.GetName())
			}
			if !slices.Equal(nss, []string{installNamespace}) {
				t.Errorf("Namespaces = %v, want [%s]", nss, installNamespace)
			}
			for _, u := range in.objs {
				ns := u.GetNamespace()
				switch u.GetKind() {
				case "Namespace":
				case "Role", "RoleBinding":
					if ns == "" {
						t.Errorf("%s %s has no namespace", u.GetKind(), u.GetName())
					}
				default:
					if ns != installNamespace {
						t.Errorf("%s %s is in namespace %q, want %s", u.GetKind(), u.GetName(), ns, installNamespace)
					}
				}
			}

			podLabels := labels.Set(in.dep.Spec.Template.Labels)
			port := in.ctr.Ports[0]

			svc := typed[corev1.Service](t, find(t, in.objs, "Service", installNamespace, deploymentName))
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
				t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, podLabels)
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "http" || svc.Spec.Ports[0].TargetPort != intstr.FromString(port.Name) {
				t.Errorf("Service ports = %+v, want one named http to target port %s", svc.Spec.Ports, port.Name)
			}

			pdb := typed[policyv1.PodDisruptionBudget](t, find(t, in.objs, "PodDisruptionBudget", installNamespace, deploymentName))
			if sel, err := labelSelector(pdb.Spec.Selector); err != nil || !sel.Matches(podLabels) {
				t.Errorf("PodDisruptionBudget selector %v does not select the pods (%v)", pdb.Spec.Selector, err)
			}
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
				t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
			}

			np := typed[networkingv1.NetworkPolicy](t, find(t, in.objs, "NetworkPolicy", installNamespace, deploymentName))
			if sel, err := labelSelector(&np.Spec.PodSelector); err != nil || !sel.Matches(podLabels) {
				t.Errorf("NetworkPolicy selector %v does not select the pods (%v)", np.Spec.PodSelector, err)
			}
			var allowed []string
			for _, r := range np.Spec.Ingress {
				for _, p := range r.Ports {
					allowed = append(allowed, p.Port.String())
				}
			}
			if !slices.Equal(allowed, []string{fmt.Sprint(port.ContainerPort)}) {
				t.Errorf("NetworkPolicy ingress ports = %v, want only %d", allowed, port.ContainerPort)
			}
		})
	}
}
