"""Pure parts of the kube harness: manifest splitting, the generated PKI, build folder names."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockops_model.testing import gotools, kube


def test_documents_splits_yaml_skips_empty_documents_and_expands_lists() -> None:
    text = """
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
  - {apiVersion: v1, kind: Secret, metadata: {name: c}}
"""
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in kube._documents(text)]

    assert names == [("Namespace", "a"), ("ConfigMap", "b"), ("Secret", "c")]


def test_pki_admin_is_a_master_and_the_serving_cert_names_the_loopback(tmp_path: Path) -> None:
    pki = kube._write_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())

    for cert in (admin, serving):
        cert.verify_directly_issued_by(ca)
    organizations = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    usages = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    assert [o.value for o in organizations] == ["system:masters"]
    assert ipaddress.IPv4Address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.sa_private.stat().st_mode & 0o077 == 0


def test_build_folder_changes_with_the_link_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = gotools.binary("helm", tmp_path)
    changed = tuple(
        dataclasses.replace(tool, ldflags=tool.ldflags + " -X main.x=y")
        if tool.name == "helm"
        else tool
        for tool in gotools.TOOLS
    )
    monkeypatch.setattr(gotools, "TOOLS", changed)

    after = gotools.binary("helm", tmp_path)

    assert before.parent.parent == after.parent.parent == tmp_path / "helm"
    assert before != after
    assert gotools.binary("kube-apiserver", tmp_path).parent.name.startswith(
        gotools.KUBERNETES_VERSION
    )


def test_unknown_tool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        gotools.binary("kubectl", tmp_path)
