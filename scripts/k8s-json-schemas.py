#!/usr/bin/env python3
"""Writes kubeconform's JSON schemas from an apiserver's OpenAPI v2 document.

    kubectl get --raw /openapi/v2 | scripts/k8s-json-schemas.py OUT_DIR

The pinned apiserver (built from the Kubernetes Go module by scripts/testbin.sh, with this
repository's CRDs installed) serves the document, so the schemas are exactly that release's
and ours, with no download. One standalone file per kind, named as kubeconform names them
(`deployment-apps-v1.json`, `service-v1.json`, `meshserver-nsh-v1alpha1.json`), found with
`-schema-location 'OUT_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'`; every `$ref` inlined
and every object
closed (`additionalProperties: false` where the API lists the properties): kubeconform's
`-strict` then refuses unknown fields, as `kubectl apply --validate=strict` does.
"""
import json
import os
import sys


def main():
    out = sys.argv[1]
    document = json.load(sys.stdin)
    definitions = document["definitions"]
    os.makedirs(out, exist_ok=True)
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            # kubeconform's own file names: `<kind>-<first label of group>-<version>`, or
            # `<kind>-<version>` for the core group.
            group = gvk["group"].split(".")[0]
            suffix = f"-{group}-{gvk['version']}" if group else f"-{gvk['version']}"
            schema = standalone(definition, definitions, ())
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            path = os.path.join(out, f"{gvk['kind']}{suffix}.json".lower())
            with open(path, "w") as f:
                json.dump(schema, f, sort_keys=True)
            written += 1
    print(f"{written} schemas in {out}", file=sys.stderr)


def standalone(schema, definitions, seen):
    """`schema` with references inlined; a reference to a definition being inlined already
    (a recursive type: JSONSchemaProps) becomes `{}`, which accepts anything."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return {}
        return standalone(definitions[name], definitions, seen + (name,))
    result = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            result[key] = {k: standalone(v, definitions, seen) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            result[key] = standalone(value, definitions, seen)
        elif key in ("allOf", "anyOf", "oneOf"):
            result[key] = [standalone(v, definitions, seen) for v in value]
        else:
            result[key] = value
    if result.get("format") == "int-or-string":
        # IntOrString: either, as the API accepts.
        result.pop("type", None)
        result["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    # Nullable fields (omitted or null both mean unset).
    if result.get("x-nullable") or result.get("nullable"):
        kind = result.get("type")
        if isinstance(kind, str):
            result["type"] = [kind, "null"]
    if "properties" in result and "additionalProperties" not in result \
            and not result.get("x-kubernetes-preserve-unknown-fields"):
        result["additionalProperties"] = False
    return result


if __name__ == "__main__":
    main()
