"""%xt_create_team: the ARM template's structure (resource types, dependsOn, parameters,
variables, no dangling references, RBAC vault, no secrets) and the config entries it prints."""
from __future__ import annotations

import json
import re

import pytest

from xt_magic.core.auth import team
from xt_magic.core.errors import ConfigError
from xt_magic.core.session import get_session

RID = re.compile(r"resourceId\('([^']+)', variables\('([^']+)'\)\)")


def _strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def check_template(t: dict) -> set[str]:
    assert t["$schema"].endswith("deploymentTemplate.json#") and t["contentVersion"]
    declared = {}
    for r in t["resources"]:
        assert {"type", "apiVersion", "name"} <= set(r)
        match = re.fullmatch(r"\[variables\('([^']+)'\)\]", r["name"])
        if match:
            declared[(r["type"], match.group(1))] = r
    for text in _strings(t):  # every parameter/variable/resource reference resolves
        for p in re.findall(r"parameters\('([^']+)'\)", text):
            assert p in t["parameters"], p
        for v in re.findall(r"variables\('([^']+)'\)", text):
            assert v in t["variables"], v
        for kind, var in RID.findall(text):
            assert (kind, var) in declared, (kind, var)
    for r in t["resources"]:
        for dep in r.get("dependsOn", []):
            kind, var = RID.fullmatch(dep.strip("[]")).groups()
            assert (kind, var) in declared
        if r["type"] == "Microsoft.Authorization/roleAssignments":
            kind, var = re.fullmatch(r"\[format\('([^']+)/\{0\}', variables\('([^']+)'\)\)\]",
                                     r["scope"]).groups()
            assert (kind, var) in declared
            assert any(var in d for d in r["dependsOn"])  # assigned after the scope exists
            assert r["properties"]["roleDefinitionId"].count(
                "Microsoft.Authorization/roleDefinitions") == 1
        if r["type"] == "Microsoft.KeyVault/vaults/secrets":
            assert r["properties"]["value"].startswith("[listKeys(")  # never a literal secret
    return {r["type"] for r in t["resources"]}


def test_team_template_without_batch(tmp_path):
    out = team.create_team(get_session(), "ml7", location="westus2", path=str(tmp_path / "t.json"))
    t = json.loads((tmp_path / "t.json").read_text())
    assert t == out.template
    types = check_template(t)
    assert types == {"Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults",
                     "Microsoft.KeyVault/vaults/secrets", "Microsoft.Authorization/roleAssignments"}
    vault = next(r for r in t["resources"] if r["type"] == "Microsoft.KeyVault/vaults")
    assert vault["properties"]["enableRbacAuthorization"] is True
    roles = [r["properties"]["roleDefinitionId"] for r in t["resources"]
             if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert any(team.ROLES["Storage Blob Data Contributor"] in r for r in roles)
    assert any(team.ROLES["Key Vault Secrets Officer"] in r for r in roles)
    assert t["parameters"]["location"]["defaultValue"] == "westus2"
    assert "az deployment group create" in str(out) and "principalId=" in out.deploy_command


def test_team_template_with_batch_and_config_entries_validate(tmp_path):
    out = team.create_team(get_session(), "ml7", location="westus2", with_batch=True,
                           path=str(tmp_path / "t.json"))
    types = check_template(out.template)
    assert {"Microsoft.Batch/batchAccounts",
            "Microsoft.ManagedIdentity/userAssignedIdentities"} <= types
    batch = next(r for r in out.template["resources"]
                 if r["type"] == "Microsoft.Batch/batchAccounts")
    auto = batch["properties"]["autoStorage"]
    assert auto["authenticationMode"] == "BatchAccountManagedIdentity"
    assert auto["nodeIdentityReference"]["resourceId"] in batch["identity"][
        "userAssignedIdentities"]
    mi_roles = [r for r in out.template["resources"]
                if r["type"] == "Microsoft.Authorization/roleAssignments"
                and r["properties"]["principalType"] == "ServicePrincipal"]
    assert len(mi_roles) == 1 and "userAssignedIdentities" in mi_roles[0]["properties"]["principalId"]
    # the printed entries are a valid xt_config.yaml: the config layer loads and validates them
    with open("xt_config.yaml", "w") as fh:
        fh.write(out.config_yaml)
    cfg = get_session().config()
    assert cfg.get("xt-services.storage") == "ml7store"
    assert cfg.get("external-services.ml7batch.url") == "https://ml7batch.westus2.batch.azure.com"
    assert type(cfg.get("external-services.ml7store.key")).__name__ == "VaultRef"
    # secrets the template stores are named after the services the config uses ($vault naming)
    names = [r["name"] for r in out.template["resources"]
             if r["type"] == "Microsoft.KeyVault/vaults/secrets"]
    assert names == ["[format('{0}/{1}', variables('vaultName'), variables('storageName'))]",
                     "[format('{0}/{1}', variables('vaultName'), variables('batchName'))]"]


@pytest.mark.parametrize("name", ["ML7", "a", "x" * 17, "7up", "team-1", "a b"])
def test_bad_team_names(name):
    with pytest.raises(ConfigError, match="bad team name"):
        team.create_team(get_session(), name)


def test_magic_writes_template_in_cwd(ip):
    out = ip.run_line_magic("xt_create_team", "ml8 --with batch")
    assert out.path.endswith("ml8-template.json") and "ml8batch" in out.config_yaml
    assert "REGION" in out.config_yaml  # no location given: the user fills in the region
