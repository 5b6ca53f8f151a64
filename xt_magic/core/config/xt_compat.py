"""Reading XT's files as XT read them: string booleans, and XT's retired built-in Batch images.

``adapt`` rewrites the merged, substituted config in place before validation and returns notes for
``%xt_config --validate``.
"""
from __future__ import annotations

from typing import Any

#: XT's built-in azure-batch-images (retired on Azure Batch today) by publisher/offer/sku. A config
#: entry naming one of these images gets the packaged default of the same name (a current image).
XT_RETIRED_IMAGES = {
    "dsvm": ("microsoft-dsvm", "linux-data-science-vm-ubuntu", "linuxdsvmubuntu"),
    "ubuntu18": ("canonical", "ubuntuserver", "18.04-lts"),
}


def adapt(data: dict, origins: dict) -> list[str]:
    return string_booleans(data, origins) + retired_images(data, origins)


def string_booleans(data: dict, origins: dict) -> list[str]:
    """``"true"``/``"false"`` where the schema wants a boolean become booleans (XT's validator took
    them; its template wrote ``login: "false"``)."""
    from .validate import place, schema_for
    notes: list[str] = []

    def walk(value: Any, path: tuple) -> Any:
        if isinstance(value, dict):
            for key in list(value):
                value[key] = walk(value[key], path + (key,))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                value[i] = walk(sub, path + (i,))
        elif isinstance(value, str) and value.strip().lower() in ("true", "false"):
            node = schema_for(path) or {}
            kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
            if "boolean" in kinds and "string" not in kinds:
                taken = value.strip().lower() == "true"
                notes.append(f"{place(origins, path)}: the string {value!r} taken as "
                             f"{str(taken).lower()}, as XT did")
                return taken
        return value

    walk(data, ())
    return notes


def _image(entry: dict) -> tuple:
    return tuple(str(entry.get(k, "")).lower() for k in ("publisher", "offer", "sku"))


def retired_images(data: dict, origins: dict) -> list[str]:
    from . import loader
    from .validate import place, where
    images = data.get("azure-batch-images")
    if not isinstance(images, dict):
        return []
    packaged = (loader.read_file(loader.DEFAULTS) or ({},))[0].get("azure-batch-images") or {}
    retired = {v: k for k, v in XT_RETIRED_IMAGES.items()}
    notes = []
    for name, entry in images.items():
        xt_name = retired.get(_image(entry)) if isinstance(entry, dict) else None
        if xt_name and xt_name in packaged:
            images[name] = dict(packaged[xt_name])
            notes.append(f"{place(origins, ('azure-batch-images', name))}: {'/'.join(_image(entry))} "
                         f"(XT's {xt_name}) is retired on Azure Batch; using "
                         f"{'/'.join(_image(packaged[xt_name]))} instead")
    targets = data.get("compute-targets") if isinstance(data.get("compute-targets"), dict) else {}
    for tname, target in targets.items():
        image = target.get("azure-image") if isinstance(target, dict) else None
        if image in XT_RETIRED_IMAGES and where(origins, ("azure-batch-images", image)).layer == "defaults":
            notes.append(f"{place(origins, ('compute-targets', tname, 'azure-image'))}: XT's built-in "
                         f"{image} ({'/'.join(XT_RETIRED_IMAGES[image])}) is retired on Azure Batch; "
                         f"it means {'/'.join(_image(images[image]))} here")
    return notes
