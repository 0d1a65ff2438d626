package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/output"
)

// kubeFlags are kubectl's --kubeconfig, --context and -n/--namespace on a
// command that touches the cluster. --kubeconfig and --context override the
// config's global.kubernetes; -n picks the config's target in that
// namespace (or checks that --target's is there): a target's namespace is
// part of its definition and is never replaced.
type kubeFlags struct {
	kubeconfig, context, namespace string
	hasNamespace                   bool
}

func (k *kubeFlags) register(c *cobra.Command, namespace bool, cfgFile *string) {
	c.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: global.kubernetes.kubeconfig, else $KUBECONFIG, ~/.kube/config, in-cluster)")
	_ = c.MarkFlagFilename("kubeconfig")
	c.Flags().StringVar(&k.context, "context", "", "kubeconfig context (default: global.kubernetes.context, else the current context)")
	_ = c.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names, err := kube.Contexts(kube.ClientOptions{Kubeconfig: k.kubeconfig})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	if namespace {
		k.hasNamespace = true
		c.Flags().StringVarP(&k.namespace, "namespace", "n", "", "the target in this namespace (with --target: check that it is there)")
		_ = c.RegisterFlagCompletionFunc("namespace", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			cfg, err := config.LoadFile(*cfgFile)
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			var out []string
			for _, t := range cfg.Targets {
				if !slices.Contains(out, t.Namespace) {
					out = append(out, t.Namespace)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		})
	}
}

// set reports whether any of the flags was given.
func (k *kubeFlags) set() bool { return k.kubeconfig != "" || k.context != "" || k.namespace != "" }

// target resolves --target and -n against the config file: --target alone
// is passed on as it is (the command reports an unknown one); -n alone must
// match exactly one target; both must agree.
func (k *kubeFlags) target(cfgFile, target string) (string, error) {
	if k.namespace == "" {
		if target == "" {
			if k.hasNamespace {
				return "", usagef("--target (or -n/--namespace) is required")
			}
			return "", usagef("--target is required")
		}
		return target, nil
	}
	cfg, err := config.LoadFile(cfgFile)
	if err != nil {
		return "", err
	}
	return selectTarget(cfg, cfgFile, target, k.namespace)
}

func selectTarget(cfg *config.Config, cfgFile, target, ns string) (string, error) {
	if target != "" {
		for _, t := range cfg.Targets {
			if t.Name == target {
				if t.Namespace != ns {
					return "", usagef("-n %s: target %q watches %s/%s, not namespace %s", ns, target, t.Namespace, t.Deployment, ns)
				}
				return target, nil
			}
		}
		return "", usagef("--target %q is not in %s", target, cfgFile)
	}
	var in, all []string
	for _, t := range cfg.Targets {
		all = append(all, t.Name+" ("+t.Namespace+")")
		if t.Namespace == ns {
			in = append(in, t.Name)
		}
	}
	switch len(in) {
	case 1:
		return in[0], nil
	case 0:
		return "", usagef("-n %s: no target of %s is in that namespace (targets: %s)", ns, cfgFile, strings.Join(all, ", "))
	default:
		return "", usagef("-n %s: targets %s are in that namespace: pick one with --target", ns, strings.Join(in, ", "))
	}
}

// completeTargets completes --target with the names in the --config file
// (those in -n's namespace when it is set).
func (k *kubeFlags) completeTargets(cfgFile *string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		cfg, err := config.LoadFile(*cfgFile)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var out []string
		for _, t := range cfg.Targets {
			if k.namespace == "" || t.Namespace == k.namespace {
				out = append(out, fmt.Sprintf("%s\t%s/%s", t.Name, t.Namespace, t.Deployment))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func fixedCompletion(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}

// registerOutput adds -o/--output into out, completed with the formats.
func registerOutput(c *cobra.Command, out *output.Format) {
	output.Register(c.Flags(), out)
	_ = c.RegisterFlagCompletionFunc("output", completeOutput)
}

func completeOutput(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	out := make([]string, len(output.Formats))
	for i, f := range output.Formats {
		out[i] = string(f)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
