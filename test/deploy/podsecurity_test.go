package deploy

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// restrictedViolations lists how a pod spec breaks the Pod Security
// Standard "restricted" (which includes "baseline"), following
// https://kubernetes.io/docs/concepts/security/pod-security-standards/.
// It is stricter in one place: any sysctl is reported, as rollguard needs
// none. An empty result means the spec is admitted in a namespace that
// enforces "restricted".
func restrictedViolations(spec *corev1.PodSpec) []string {
	var v []string
	add := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	if spec.HostNetwork {
		add("hostNetwork is true")
	}
	if spec.HostPID {
		add("hostPID is true")
	}
	if spec.HostIPC {
		add("hostIPC is true")
	}
	if spec.SecurityContext != nil && spec.SecurityContext.WindowsOptions != nil &&
		spec.SecurityContext.WindowsOptions.HostProcess != nil && *spec.SecurityContext.WindowsOptions.HostProcess {
		add("pod is a Windows host process")
	}
	for _, vol := range spec.Volumes {
		if !restrictedVolume(vol.VolumeSource) {
			add("volume %q is not of a type restricted allows (configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret)", vol.Name)
		}
	}

	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	podNonRoot := psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		add("pod runAsUser is 0")
	}
	podSeccomp := ""
	if psc.SeccompProfile != nil {
		podSeccomp = string(psc.SeccompProfile.Type)
		if !goodSeccomp(podSeccomp) {
			add("pod seccompProfile.type is %s, want RuntimeDefault or Localhost", podSeccomp)
		}
	}
	if len(psc.Sysctls) > 0 {
		add("pod sets sysctls")
	}
	if psc.SELinuxOptions != nil {
		if msg := badSELinux(psc.SELinuxOptions); msg != "" {
			add("pod %s", msg)
		}
	}
	if psc.AppArmorProfile != nil && psc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
		add("pod appArmorProfile is Unconfined")
	}

	type ctr struct {
		kind string
		c    corev1.Container
	}
	var all []ctr
	for _, c := range spec.InitContainers {
		all = append(all, ctr{"init container", c})
	}
	for _, c := range spec.Containers {
		all = append(all, ctr{"container", c})
	}
	for _, c := range spec.EphemeralContainers {
		all = append(all, ctr{"ephemeral container", corev1.Container(c.EphemeralContainerCommon)})
	}
	for _, x := range all {
		name := fmt.Sprintf("%s %q", x.kind, x.c.Name)
		sc := x.c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if sc.Privileged != nil && *sc.Privileged {
			add("%s is privileged", name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add("%s does not set allowPrivilegeEscalation: false", name)
		}
		switch {
		case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot:
			add("%s sets runAsNonRoot: false", name)
		case sc.RunAsNonRoot == nil && !podNonRoot:
			add("%s runs without runAsNonRoot: true (pod or container)", name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			add("%s runAsUser is 0", name)
		}
		switch {
		case sc.SeccompProfile != nil && !goodSeccomp(string(sc.SeccompProfile.Type)):
			add("%s seccompProfile.type is %s, want RuntimeDefault or Localhost", name, sc.SeccompProfile.Type)
		case sc.SeccompProfile == nil && podSeccomp == "":
			add("%s has no seccompProfile (pod or container)", name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			add("%s does not drop ALL capabilities", name)
		}
		if sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Add {
				if c != "NET_BIND_SERVICE" {
					add("%s adds capability %s", name, c)
				}
			}
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			add("%s procMount is %s", name, *sc.ProcMount)
		}
		if sc.SELinuxOptions != nil {
			if msg := badSELinux(sc.SELinuxOptions); msg != "" {
				add("%s %s", name, msg)
			}
		}
		if sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
			add("%s appArmorProfile is Unconfined", name)
		}
		if sc.WindowsOptions != nil && sc.WindowsOptions.HostProcess != nil && *sc.WindowsOptions.HostProcess {
			add("%s is a Windows host process", name)
		}
		for _, p := range x.c.Ports {
			if p.HostPort != 0 {
				add("%s uses hostPort %d", name, p.HostPort)
			}
		}
	}
	return v
}

func restrictedVolume(s corev1.VolumeSource) bool {
	return s.ConfigMap != nil || s.CSI != nil || s.DownwardAPI != nil || s.EmptyDir != nil ||
		s.Ephemeral != nil || s.PersistentVolumeClaim != nil || s.Projected != nil || s.Secret != nil
}

func goodSeccomp(typ string) bool {
	return typ == string(corev1.SeccompProfileTypeRuntimeDefault) || typ == string(corev1.SeccompProfileTypeLocalhost)
}

func badSELinux(o *corev1.SELinuxOptions) string {
	switch {
	case o.User != "" || o.Role != "":
		return "sets seLinuxOptions user or role"
	case !slices.Contains([]string{"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}, o.Type):
		return fmt.Sprintf("seLinuxOptions.type %s is not allowed", o.Type)
	}
	return ""
}
