//! Minimal decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).
//!
//! kubectl's typed clients (`kubectl create namespace|configmap|secret|serviceaccount`) send protobuf,
//! and a real apiserver accepts it. meshsim decodes only those simple kinds: the `runtime.Unknown`
//! envelope (`k8s.io/apimachinery/pkg/runtime/types_proto.go`: magic `k8s\0`, field 1 typeMeta, field 2
//! raw), `ObjectMeta` (name 1, generateName 2, namespace 3, labels 11, annotations 12, finalizers 14) and
//! each kind's few fields (field numbers from `k8s.io/api/core/v1/generated.proto`). Other kinds answer
//! 415 UnsupportedMediaType.

use serde_json::{Map, Value, json};

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        out |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(out);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(b, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let s = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Field::Bytes(s)
            }
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            _ => return None,
        };
        out.push((num, f));
    }
    (pos == b.len()).then_some(out)
}

fn string(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut k = String::new();
    let mut v = Value::String(String::new());
    for (n, f) in fields(b)? {
        if let Field::Bytes(s) = f {
            match n {
                1 => k = string(s)?,
                2 if bytes_value => v = Value::String(base64(s)),
                2 => v = Value::String(string(s)?),
                _ => {}
            }
        }
    }
    Some((k, v))
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        let Field::Bytes(s) = f else { continue };
        match n {
            1 => {
                m.insert("name".into(), json!(string(s)?));
            }
            2 => {
                m.insert("generateName".into(), json!(string(s)?));
            }
            3 => {
                m.insert("namespace".into(), json!(string(s)?));
            }
            11 => {
                let (k, v) = map_entry(s, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = map_entry(s, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(json!(string(s)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    m.retain(|_, v| v.as_str() != Some(""));
    Some(Value::Object(m))
}

/// Decodes a protobuf body of one of the supported core kinds into its JSON form; `None` when the kind is
/// not supported or the bytes do not parse.
pub fn decode(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    if let Field::Bytes(s) = tf {
                        match tn {
                            1 => api_version = string(s)?,
                            2 => kind = string(s)?,
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    if api_version == "authentication.k8s.io/v1" || api_version == "authorization.k8s.io/v1" {
        return decode_auth(&api_version, &kind, raw);
    }
    if api_version != "v1" {
        return None;
    }
    let mut obj = json!({"apiVersion": "v1", "kind": kind, "metadata": {}});
    let mut data = Map::new();
    let mut string_data = Map::new();
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(s)) => obj["metadata"] = object_meta(s)?,
            ("ConfigMap", 2, Field::Bytes(s)) => {
                let (k, v) = map_entry(s, false)?;
                data.insert(k, v);
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj["immutable"] = json!(v != 0)
            }
            ("Secret", 2, Field::Bytes(s)) => {
                let (k, v) = map_entry(s, true)?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(s)) => obj["type"] = json!(string(s)?),
            ("Secret", 4, Field::Bytes(s)) => {
                let (k, v) = map_entry(s, false)?;
                string_data.insert(k, v);
            }
            ("ServiceAccount", 4, Field::Varint(v)) => obj["automountServiceAccountToken"] = json!(v != 0),
            ("Namespace" | "ConfigMap" | "Secret" | "ServiceAccount", _, _) => {}
            _ => return None,
        }
    }
    if !matches!(
        kind.as_str(),
        "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
    ) {
        return None;
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    Some(obj)
}

/// The string fields of a message, by field number.
fn string_fields(b: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        if let (Field::Bytes(s), Some((_, name))) = (f, names.iter().find(|(k, _)| *k == n)) {
            m.insert(name.to_string(), json!(string(s)?));
        }
    }
    Some(Value::Object(m))
}

/// The request bodies of `kubectl create token` and `kubectl auth can-i|whoami`, field numbers from
/// `k8s.io/api/authentication/v1/generated.proto` (TokenRequestSpec: audiences 1, expirationSeconds 4) and
/// `k8s.io/api/authorization/v1/generated.proto` (SelfSubjectAccessReviewSpec: resourceAttributes 1,
/// nonResourceAttributes 2; ResourceAttributes: namespace 1, verb 2, group 3, version 4, resource 5,
/// subresource 6, name 7; NonResourceAttributes: path 1, verb 2; SelfSubjectRulesReviewSpec: namespace 1).
fn decode_auth(api_version: &str, kind: &str, raw: &[u8]) -> Option<Value> {
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": {}});
    for (n, f) in fields(raw)? {
        let Field::Bytes(b) = f else { continue };
        match (kind, n) {
            (_, 1) => obj["metadata"] = object_meta(b)?,
            ("TokenRequest", 2) => {
                let mut audiences = Vec::new();
                for (sn, sf) in fields(b)? {
                    match (sn, sf) {
                        (1, Field::Bytes(a)) => audiences.push(json!(string(a)?)),
                        (4, Field::Varint(v)) => obj["spec"]["expirationSeconds"] = json!(v),
                        _ => {}
                    }
                }
                obj["spec"]["audiences"] = json!(audiences);
            }
            ("SelfSubjectAccessReview", 2) => {
                for (sn, sf) in fields(b)? {
                    match (sn, sf) {
                        (1, Field::Bytes(r)) => {
                            obj["spec"]["resourceAttributes"] = string_fields(
                                r,
                                &[
                                    (1, "namespace"),
                                    (2, "verb"),
                                    (3, "group"),
                                    (4, "version"),
                                    (5, "resource"),
                                    (6, "subresource"),
                                    (7, "name"),
                                ],
                            )?
                        }
                        (2, Field::Bytes(r)) => {
                            obj["spec"]["nonResourceAttributes"] =
                                string_fields(r, &[(1, "path"), (2, "verb")])?
                        }
                        _ => {}
                    }
                }
            }
            ("SelfSubjectRulesReview", 2) => obj["spec"] = string_fields(b, &[(1, "namespace")])?,
            _ => {}
        }
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let entry = [msg(1, b"k"), msg(2, b"v")].concat();
        let label = [msg(1, b"app"), msg(2, b"web")].concat();
        let meta = [msg(1, b"cfg"), msg(3, b"shop"), msg(11, &label)].concat();
        let raw = [msg(1, &meta), msg(2, &entry)].concat();
        let tm = [msg(1, b"v1"), msg(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), msg(1, &tm), msg(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "shop", "labels": {"app": "web"}},
                "data": {"k": "v"}})
        );
        assert_eq!(base64(b"hi!x"), "aGkheA==");
    }
}
