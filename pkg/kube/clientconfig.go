package kube

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ErrKubeconfig marks a problem with where the Kubernetes API is (an
// unknown context, a kubeconfig that cannot be read, none at all): bad
// input for the command line, which exits 2.
var ErrKubeconfig = errors.New("kubeconfig")

// ClientOptions say where the Kubernetes API is, found the way kubectl
// finds it: an explicit kubeconfig file, else the files of $KUBECONFIG (a
// list, merged), else ~/.kube/config, else the in-cluster service account.
type ClientOptions struct {
	// Kubeconfig is an explicit kubeconfig file; empty means the loading
	// rules above.
	Kubeconfig string
	// Context is the kubeconfig context to use; empty means the
	// kubeconfig's current-context.
	Context string
	// KubeconfigFrom and ContextFrom name where the values came from
	// (a flag such as "--context", or a config path such as
	// "global.kubernetes.context"), for error messages.
	KubeconfigFrom, ContextFrom string
}

// Overlay returns o with the command line's --kubeconfig and --context put
// over it where they are set.
func (o ClientOptions) Overlay(kubeconfigFlag, contextFlag string) ClientOptions {
	if kubeconfigFlag != "" {
		o.Kubeconfig, o.KubeconfigFrom = kubeconfigFlag, "--kubeconfig"
	}
	if contextFlag != "" {
		o.Context, o.ContextFrom = contextFlag, "--context"
	}
	return o
}

// RESTConfig resolves o. A context that the kubeconfig does not define is
// an error, never a fall back to another context or to in-cluster.
func RESTConfig(o ClientOptions) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKubeconfig, describe(o.Kubeconfig, o.KubeconfigFrom), err)
	}
	if o.Context != "" {
		if _, ok := raw.Contexts[o.Context]; !ok {
			return nil, fmt.Errorf("%w: %s %q: no such context in %s%s", ErrKubeconfig, or(o.ContextFrom, "context"), o.Context,
				sources(rules, o.Kubeconfig), defined(raw))
		}
	}
	rc, err := cc.ClientConfig()
	switch {
	case clientcmd.IsEmptyConfig(err):
		return nil, fmt.Errorf("%w: no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster: use --kubeconfig", ErrKubeconfig)
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrKubeconfig, sources(rules, o.Kubeconfig), err)
	}
	return rc, nil
}

// Contexts lists the context names of the kubeconfig o finds, sorted, for
// shell completion.
func Contexts(o ClientOptions) ([]string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(raw.Contexts))
	for n := range raw.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func describe(path, from string) string {
	switch {
	case path == "":
		return "loading the kubeconfig"
	case from == "":
		return "kubeconfig " + path
	default:
		return fmt.Sprintf("%s %q", from, path)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// sources names the kubeconfig files that were read.
func sources(rules *clientcmd.ClientConfigLoadingRules, explicit string) string {
	if explicit != "" {
		return explicit
	}
	files := rules.GetLoadingPrecedence()
	if len(files) == 0 {
		return "the kubeconfig"
	}
	return strings.Join(files, ", ")
}

func defined(raw clientcmdapi.Config) string {
	if len(raw.Contexts) == 0 {
		return " (it defines no context)"
	}
	names := make([]string, 0, len(raw.Contexts))
	for n := range raw.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	return " (defined: " + strings.Join(names, ", ") + ")"
}
