//! JSON renderings of metadata values (exact for 64-bit integers).

use serde_json::{Number, Value as Json};

use super::value::{Array, Value};

/// A metadata value as JSON: integers exact, arrays as (nested) JSON arrays.
///
/// JSON has no NaN or infinity; such floats become the strings `"NaN"`,
/// `"inf"` and `"-inf"`.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::U8(v) => (*v).into(),
        Value::I8(v) => (*v).into(),
        Value::U16(v) => (*v).into(),
        Value::I16(v) => (*v).into(),
        Value::U32(v) => (*v).into(),
        Value::I32(v) => (*v).into(),
        Value::U64(v) => (*v).into(),
        Value::I64(v) => (*v).into(),
        Value::F32(v) => float(f64::from(*v)),
        Value::F64(v) => float(*v),
        Value::Bool(v) => (*v).into(),
        Value::String(v) => v.as_str().into(),
        Value::Array(a) => array_to_json(a),
    }
}

fn float(v: f64) -> Json {
    Number::from_f64(v).map_or_else(
        || {
            let text = if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            Json::String(text.to_owned())
        },
        Json::Number,
    )
}

fn array_to_json(array: &Array) -> Json {
    fn list<T>(items: &[T], f: impl Fn(&T) -> Json) -> Json {
        Json::Array(items.iter().map(f).collect())
    }
    match array {
        Array::U8(v) => list(v, |x| (*x).into()),
        Array::I8(v) => list(v, |x| (*x).into()),
        Array::U16(v) => list(v, |x| (*x).into()),
        Array::I16(v) => list(v, |x| (*x).into()),
        Array::U32(v) => list(v, |x| (*x).into()),
        Array::I32(v) => list(v, |x| (*x).into()),
        Array::U64(v) => list(v, |x| (*x).into()),
        Array::I64(v) => list(v, |x| (*x).into()),
        Array::F32(v) => list(v, |x| float(f64::from(*x))),
        Array::F64(v) => list(v, |x| float(*x)),
        Array::Bool(v) => list(v, |x| (*x).into()),
        Array::Unread(a) => serde_json::json!({
            "unread": { "element_type": a.element_type.name(), "len": a.len }
        }),
        Array::String(v) => Json::Array(v.iter().map(Json::from).collect()),
        Array::Array(v) => list(v, array_to_json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_integers_stay_exact() {
        let j = value_to_json(&Value::U64(u64::MAX));
        assert_eq!(j.to_string(), "18446744073709551615");
        let j = value_to_json(&Value::I64(i64::MIN));
        assert_eq!(j.to_string(), "-9223372036854775808");
    }

    #[test]
    fn non_finite_floats_are_named() {
        assert_eq!(value_to_json(&Value::F32(f32::NAN)), Json::from("NaN"));
        assert_eq!(
            value_to_json(&Value::F64(f64::NEG_INFINITY)),
            Json::from("-inf")
        );
        assert_eq!(value_to_json(&Value::F32(0.5)), Json::from(0.5));
    }

    #[test]
    fn nested_and_empty_arrays() {
        let v = Value::Array(Array::Array(vec![
            Array::I8(vec![-1, 2]),
            Array::String(Default::default()),
        ]));
        assert_eq!(value_to_json(&v).to_string(), "[[-1,2],[]]");
    }
}
