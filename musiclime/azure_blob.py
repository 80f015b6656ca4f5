"""Azure Blob Storage locations: ``az://<container>/<path>`` (the account from the
environment) and ``abfs[s]://<container>@<account>.dfs.core.windows.net/<path>``.

The account, its endpoint and its credential come from the environment, under the names
delta-rs (object_store) reads, so one environment serves this package's files, its Delta
tables and the output lease alike:

- ``AZURE_STORAGE_ACCOUNT_NAME`` (for ``az://``), then the first credential set of
  ``AZURE_STORAGE_ACCOUNT_KEY``, ``AZURE_STORAGE_SAS_TOKEN``, a service principal
  (``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``, ``AZURE_TENANT_ID``), else Azure's default
  credential chain (workload or managed identity, the Azure CLI's login).
- ``AZURE_STORAGE_USE_EMULATOR=true``: Azurite at ``AZURITE_BLOB_STORAGE_URL`` (default
  ``http://127.0.0.1:10000``), its development account unless an account and key are set.

Flat-namespace Blob storage is what the tests prove (Azurite has no hierarchical
namespace); an ADLS Gen2 account with HNS goes through the same calls, untested.
Credentials are held by the clients made here and are never logged or returned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

SCHEMES = ("az", "abfs", "abfss")
EMULATOR_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: it only opens the local emulator)
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def is_azure(location: str) -> bool:
    return location.partition("://")[0] in SCHEMES


def split(location: str) -> tuple[str | None, str]:
    """``(account named in the URI or None, "<container>/<path>")`` of an Azure location."""
    scheme, _, rest = location.partition("://")
    rest = rest.split("?", 1)[0]
    head, _, path = rest.partition("/")
    if scheme != "az" and "@" in head:  # abfs[s]://container@account.dfs.core.windows.net/path
        container, _, host = head.partition("@")
        return host.split(".", 1)[0], f"{container}/{path}".rstrip("/")
    return None, rest.rstrip("/")


def location_of(template: str, path: str) -> str:
    """The location of ``path`` ("<container>/<path>") written like ``template``."""
    scheme, _, rest = template.partition("://")
    head = rest.split("/", 1)[0]
    if scheme != "az" and "@" in head:
        container, _, inside = path.partition("/")
        return f"{scheme}://{container}@{head.partition('@')[2]}/{inside}"
    return f"{scheme}://{path}"


@dataclass(frozen=True)
class Account:
    """One storage account as the environment configures it (``repr`` shows no secret)."""

    name: str
    blob_url: str  # the Blob service's base URL, with the account (http://127.0.0.1:10000/devstoreaccount1)
    key: str | None = field(default=None, repr=False)
    sas: str | None = field(default=None, repr=False)
    principal: tuple[str, str, str] | None = field(default=None, repr=False)  # client id, secret, tenant

    @property
    def authority(self) -> str:
        return urlsplit(self.blob_url).netloc

    @property
    def scheme(self) -> str:
        return urlsplit(self.blob_url).scheme


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def account(location: str) -> Account:
    """The account of an Azure location, configured from the environment (see the module)."""
    named, _ = split(location)
    env = os.environ
    key, sas = env.get("AZURE_STORAGE_ACCOUNT_KEY") or None, env.get("AZURE_STORAGE_SAS_TOKEN") or None
    principal = tuple(env.get(k, "") for k in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"))
    if _flag("AZURE_STORAGE_USE_EMULATOR"):
        name = named or env.get("AZURE_STORAGE_ACCOUNT_NAME") or EMULATOR_ACCOUNT
        base = (env.get("AZURITE_BLOB_STORAGE_URL") or "http://127.0.0.1:10000").rstrip("/")
        return Account(name, f"{base}/{name}", key=key or (None if sas else EMULATOR_KEY), sas=sas)
    name = named or env.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not name:
        raise ValueError(f"{location}: no storage account: set AZURE_STORAGE_ACCOUNT_NAME (or write "
                         "abfss://<container>@<account>.dfs.core.windows.net/<path>)")
    return Account(name, f"https://{name}.blob.core.windows.net", key=key, sas=None if key else sas,
                   principal=principal if all(principal) and not (key or sas) else None)  # type: ignore[arg-type]


@lru_cache(maxsize=16)
def filesystem(acct: Account):
    """``pyarrow.fs.AzureFileSystem`` of the account (its root holds the containers)."""
    import pyarrow.fs as pafs
    kwargs: dict = {"blob_storage_authority": acct.authority, "blob_storage_scheme": acct.scheme}
    if acct.scheme == "http":  # the emulator serves both APIs on one port
        kwargs.update(dfs_storage_authority=acct.authority, dfs_storage_scheme="http")
    if acct.key:
        kwargs["account_key"] = acct.key
    elif acct.sas:
        kwargs["sas_token"] = acct.sas
    elif acct.principal:
        kwargs.update(client_id=acct.principal[0], client_secret=acct.principal[1], tenant_id=acct.principal[2])
    return pafs.AzureFileSystem(acct.name, **kwargs)


def credential(acct: Account):
    """What the Blob SDK's clients take as ``credential``."""
    if acct.key:
        return {"account_name": acct.name, "account_key": acct.key}
    if acct.sas:
        from azure.core.credentials import AzureSasCredential
        return AzureSasCredential(acct.sas)
    from azure.identity import ClientSecretCredential, DefaultAzureCredential
    if acct.principal:
        return ClientSecretCredential(acct.principal[2], acct.principal[0], acct.principal[1])
    return DefaultAzureCredential()


def blob_client(location: str):
    """``azure.storage.blob.BlobClient`` of one blob (conditional writes: the lease)."""
    from azure.storage.blob import BlobClient
    acct = account(location)
    container, _, blob = split(location)[1].partition("/")
    return BlobClient(acct.blob_url, container, blob, credential=credential(acct))
