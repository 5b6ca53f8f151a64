"""``%xt_create_team``: an ARM template for a team's Azure services, and the config that uses them.

The template (deploy with ``az deployment group create``) creates:

- a storage account (HTTPS only, TLS 1.2, no public blob access) for jobs, runs and snapshots;
- a Key Vault in RBAC mode, holding the storage (and Batch) account key as the secret named after
  the xt_config service (so ``key: $vault`` works at once);
- role assignments for the user: Storage Blob Data Contributor on the account (RBAC store access,
  user-delegation SAS) and Key Vault Secrets Officer on the vault;
- with ``--with batch``: a user-assigned managed identity with Storage Blob Data Contributor, and a
  Batch account whose auto-storage is the team account, reached with that identity.

Nothing secret is written: keys move from the resources into the vault inside Azure (listKeys).
"""
from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass

from ..errors import ConfigError

ROLES = {  # built-in role definition ids (the same in every tenant)
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}
API = {"storage": "2023-01-01", "vault": "2023-07-01", "role": "2022-04-01",
       "identity": "2023-01-31", "batch": "2024-02-01"}


@dataclass
class TeamTemplate:
    """What ``create_team`` wrote: the template path, the template, and xt_config.yaml entries."""
    path: str
    template: dict
    config_yaml: str
    deploy_command: str

    def __str__(self) -> str:
        return (f"wrote ARM template {self.path}\n\ndeploy it:\n  {self.deploy_command}\n\n"
                f"then add to xt_config.yaml:\n\n{self.config_yaml}")

    __repr__ = __str__

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


def _rid(kind: str, var: str) -> str:
    return f"[resourceId('{kind}', variables('{var}'))]"


def _role(name: str, scope_type: str, scope_var: str, principal: str, principal_type: str,
          depends: list[str]) -> dict:
    role_id = ROLES[name]
    return {
        "type": "Microsoft.Authorization/roleAssignments", "apiVersion": API["role"],
        "name": f"[guid({_rid(scope_type, scope_var)[1:-1]}, {principal[1:-1]}, '{role_id}')]",
        "scope": f"[format('{scope_type}/{{0}}', variables('{scope_var}'))]",
        "dependsOn": depends,
        "properties": {
            "roleDefinitionId": f"[subscriptionResourceId('Microsoft.Authorization/"
                                f"roleDefinitions', '{role_id}')]",
            "principalId": principal, "principalType": principal_type,
        },
    }


def build_template(name: str, location: str | None, with_batch: bool,
                   principal_id: str = "") -> dict:
    """The ARM template (a dict) for team ``name``."""
    storage, vault, batch = "Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults", \
        "Microsoft.Batch/batchAccounts"
    identity = "Microsoft.ManagedIdentity/userAssignedIdentities"
    secret = "Microsoft.KeyVault/vaults/secrets"
    user = "[parameters('principalId')]"
    resources = [
        {"type": storage, "apiVersion": API["storage"], "name": "[variables('storageName')]",
         "location": "[parameters('location')]", "sku": {"name": "Standard_LRS"},
         "kind": "StorageV2",
         "properties": {"minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": False,
                        "supportsHttpsTrafficOnly": True}},
        {"type": vault, "apiVersion": API["vault"], "name": "[variables('vaultName')]",
         "location": "[parameters('location')]",
         "properties": {"tenantId": "[subscription().tenantId]",
                        "sku": {"family": "A", "name": "standard"},
                        "enableRbacAuthorization": True, "enableSoftDelete": True}},
        {"type": secret, "apiVersion": API["vault"],
         "name": "[format('{0}/{1}', variables('vaultName'), variables('storageName'))]",
         "dependsOn": [_rid(vault, "vaultName"), _rid(storage, "storageName")],
         "properties": {"value": f"[listKeys({_rid(storage, 'storageName')[1:-1]}, "
                                 f"'{API['storage']}').keys[0].value]"}},
        _role("Storage Blob Data Contributor", storage, "storageName", user,
              "[parameters('principalType')]", [_rid(storage, "storageName")]),
        _role("Key Vault Secrets Officer", vault, "vaultName", user,
              "[parameters('principalType')]", [_rid(vault, "vaultName")]),
    ]
    outputs = {
        "storageAccount": {"type": "string", "value": "[variables('storageName')]"},
        "vaultUri": {"type": "string",
                     "value": f"[reference({_rid(vault, 'vaultName')[1:-1]}).vaultUri]"},
    }
    variables = {
        "storageName": "[toLower(format('{0}store', parameters('teamName')))]",
        "vaultName": "[format('{0}-vault', parameters('teamName'))]",
    }
    if with_batch:
        variables.update({"batchName": "[toLower(format('{0}batch', parameters('teamName')))]",
                          "identityName": "[format('{0}-batch-identity', parameters('teamName'))]"})
        mi = f"reference({_rid(identity, 'identityName')[1:-1]}, '{API['identity']}').principalId"
        resources += [
            {"type": identity, "apiVersion": API["identity"], "name": "[variables('identityName')]",
             "location": "[parameters('location')]"},
            _role("Storage Blob Data Contributor", storage, "storageName", f"[{mi}]",
                  "ServicePrincipal", [_rid(storage, "storageName"), _rid(identity, "identityName")]),
            {"type": batch, "apiVersion": API["batch"], "name": "[variables('batchName')]",
             "location": "[parameters('location')]",
             "dependsOn": [_rid(storage, "storageName"), _rid(identity, "identityName")],
             "identity": {"type": "UserAssigned", "userAssignedIdentities": {
                 _rid(identity, "identityName"): {}}},
             "properties": {
                 "poolAllocationMode": "BatchService",
                 "allowedAuthenticationModes": ["SharedKey", "AAD", "TaskAuthenticationToken"],
                 "autoStorage": {"storageAccountId": _rid(storage, "storageName"),
                                 "authenticationMode": "BatchAccountManagedIdentity",
                                 "nodeIdentityReference": {
                                     "resourceId": _rid(identity, "identityName")}}}},
            {"type": secret, "apiVersion": API["vault"],
             "name": "[format('{0}/{1}', variables('vaultName'), variables('batchName'))]",
             "dependsOn": [_rid(vault, "vaultName"), _rid(batch, "batchName")],
             "properties": {"value": f"[listKeys({_rid(batch, 'batchName')[1:-1]}, "
                                     f"'{API['batch']}').primary]"}},
        ]
        outputs["batchEndpoint"] = {
            "type": "string",
            "value": f"[format('https://{{0}}', reference({_rid(batch, 'batchName')[1:-1]})"
                     f".accountEndpoint)]"}
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                   "deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "teamName": {"type": "string", "defaultValue": name, "minLength": 3,
                         "maxLength": 16},
            "location": {"type": "string",
                         "defaultValue": location or "[resourceGroup().location]"},
            "principalId": {"type": "string", "defaultValue": principal_id,
                            "metadata": {"description": "object id of the user given access "
                                         "(az ad signed-in-user show --query id -o tsv)"}},
            "principalType": {"type": "string", "defaultValue": "User",
                              "allowedValues": ["User", "Group", "ServicePrincipal"]},
        },
        "variables": variables,
        "resources": resources,
        "outputs": outputs,
    }


def config_entries(name: str, location: str | None, with_batch: bool) -> str:
    """The xt_config.yaml entries pointing at what the template creates."""
    store, vault, batch = f"{name}store", f"{name}-vault", f"{name}batch"
    lines = ["external-services:",
             f"  {store}: {{type: storage, provider: azure-blob-21, name: {store}, key: $vault}}",
             f"  {vault}: {{type: vault, url: \"https://{vault}.vault.azure.net/\"}}"]
    if with_batch:
        region = location or "REGION"
        lines.append(f"  {batch}: {{type: batch, url: \"https://{batch}.{region}.batch.azure.com\","
                     f" key: $vault}}")
    lines += ["xt-services:", f"  storage: {store}", f"  vault: {vault}"]
    if with_batch:
        lines += ["compute-targets:",
                  f"  batch: {{service: {batch}, vm-size: Standard_D2s_v3, azure-image: ubuntu22,"
                  " nodes: 1, low-pri: true, setup: local}"]
    lines += ["general:", f"  xt-team-name: {name}"]
    return "\n".join(lines) + "\n"


def create_team(session, name: str, location: str | None = None, with_batch: bool = False,
                path: str | None = None) -> TeamTemplate:
    """Write ``NAME-template.json`` (or ``path``) and return it with the config entries."""
    if not re.fullmatch(r"[a-z][a-z0-9]{2,15}", name or ""):
        raise ConfigError(f"bad team name {name!r}",
                          hint="3-16 lowercase letters and digits, starting with a letter "
                               "(it prefixes storage account names)")
    if location is not None and not re.fullmatch(r"[a-z0-9]+", location):
        raise ConfigError(f"bad location {location!r}", hint="an Azure region like westus2")
    principal = ""
    cache = getattr(session, "auth", None)
    if cache is not None and getattr(cache, "object_id", None):
        principal = cache.object_id
    template = build_template(name, location, with_batch, principal)
    path = path or os.path.join(session.cwd or os.getcwd(), f"{name}-template.json")
    try:
        with open(path, "w") as fh:
            json.dump(template, fh, indent=2)
            fh.write("\n")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}", hint="pick another --path") \
            from None
    deploy = (f"az deployment group create -g RESOURCE_GROUP --template-file {shlex.quote(path)}"
              + ("" if principal else
                 " --parameters principalId=$(az ad signed-in-user show --query id -o tsv)"))
    return TeamTemplate(path, template, config_entries(name, location, with_batch), deploy)
