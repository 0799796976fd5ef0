"""Reads `helm template` on stdin and prints the documents that grant and police API access
(ServiceAccounts, Roles, RoleBindings, ValidatingAdmissionPolicies and their bindings), to be
applied for real without the workloads.

  helm template ... | python3 -m spindletools.chart.access_policy >policy.yaml
"""
import sys

import yaml

KEEP = {"ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding"}


def main():
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] in KEEP]
    print(yaml.safe_dump_all(docs))


if __name__ == "__main__":
    main()
