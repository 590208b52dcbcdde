//! The built-in functions: their names and arities (checked at compile time) and what they
//! return. Arguments of the wrong type are converted where AWS converts them and are otherwise
//! Undefined, as the AWS IoT SQL reference documents per function.

use std::borrow::Cow;

use base64::Engine as _;
use fleetcore_core::sigv4::hex;
use md5::Md5;
use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::eval::Scope;
use super::expr::{ArithOp, Call};
use super::joda::{Pattern, from_epoch_ms, zone_offset};
use super::value::{Num, Val, arith};

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Topic,
    ClientId,
    Principal,
    Timestamp,
    NewUuid,
    TraceId,
    Abs,
    Ceil,
    Floor,
    Round,
    Mod,
    Power,
    Sqrt,
    Ln,
    Log,
    Lower,
    Upper,
    Trim,
    Substring,
    Concat,
    Length,
    StartsWith,
    EndsWith,
    IndexOf,
    Replace,
    RegexpMatches,
    RegexpReplace,
    IsNull,
    IsUndefined,
    IsString,
    IsNumber,
    IsBoolean,
    IsObject,
    IsArray,
    Get,
    Encode,
    Md5,
    Sha256,
    ParseTime,
    TimeToEpoch,
    GetThingShadow,
    AwsLambda,
    GetMqttProperty,
    GetUserProperties,
    Acos,
    Asin,
    Atan,
    Atan2,
    Cos,
    Cosh,
    Sin,
    Sinh,
    Tan,
    Tanh,
    Exp,
    Sign,
    Trunc,
    Remainder,
    BitAnd,
    BitOr,
    BitXor,
    BitNot,
    Chr,
    Lpad,
    Rpad,
    Ltrim,
    Rtrim,
    NumBytes,
    Sha1,
    Sha224,
    Sha384,
    Sha512,
    RegexpSubstr,
    Decode,
    Rand,
}

/// Name (lower case), function, fewest and most arguments (`None`: any number).
const FUNCTIONS: &[(&str, Func, usize, Option<usize>)] = &[
    ("topic", Func::Topic, 0, Some(1)),
    ("clientid", Func::ClientId, 0, Some(0)),
    ("principal", Func::Principal, 0, Some(0)),
    ("timestamp", Func::Timestamp, 0, Some(0)),
    ("newuuid", Func::NewUuid, 0, Some(0)),
    ("traceid", Func::TraceId, 0, Some(0)),
    ("abs", Func::Abs, 1, Some(1)),
    ("ceil", Func::Ceil, 1, Some(1)),
    ("floor", Func::Floor, 1, Some(1)),
    ("round", Func::Round, 1, Some(1)),
    ("mod", Func::Mod, 2, Some(2)),
    ("power", Func::Power, 2, Some(2)),
    ("sqrt", Func::Sqrt, 1, Some(1)),
    ("ln", Func::Ln, 1, Some(1)),
    ("log", Func::Log, 1, Some(1)),
    ("lower", Func::Lower, 1, Some(1)),
    ("upper", Func::Upper, 1, Some(1)),
    ("trim", Func::Trim, 1, Some(1)),
    ("substring", Func::Substring, 2, Some(3)),
    ("concat", Func::Concat, 0, None),
    ("length", Func::Length, 1, Some(1)),
    ("startswith", Func::StartsWith, 2, Some(2)),
    ("endswith", Func::EndsWith, 2, Some(2)),
    ("indexof", Func::IndexOf, 2, Some(2)),
    ("replace", Func::Replace, 3, Some(3)),
    ("regexp_matches", Func::RegexpMatches, 2, Some(2)),
    ("regexp_replace", Func::RegexpReplace, 3, Some(3)),
    ("isnull", Func::IsNull, 1, Some(1)),
    ("isundefined", Func::IsUndefined, 1, Some(1)),
    ("isstring", Func::IsString, 1, Some(1)),
    ("isnumber", Func::IsNumber, 1, Some(1)),
    ("isboolean", Func::IsBoolean, 1, Some(1)),
    ("isobject", Func::IsObject, 1, Some(1)),
    ("isarray", Func::IsArray, 1, Some(1)),
    ("get", Func::Get, 2, Some(2)),
    ("encode", Func::Encode, 2, Some(2)),
    ("md5", Func::Md5, 1, Some(1)),
    ("sha256", Func::Sha256, 1, Some(1)),
    ("parse_time", Func::ParseTime, 2, Some(3)),
    ("time_to_epoch", Func::TimeToEpoch, 2, Some(2)),
    ("get_thing_shadow", Func::GetThingShadow, 2, Some(3)),
    ("aws_lambda", Func::AwsLambda, 2, Some(2)),
    ("get_mqtt_property", Func::GetMqttProperty, 1, Some(1)),
    ("get_user_properties", Func::GetUserProperties, 1, Some(1)),
    ("acos", Func::Acos, 1, Some(1)),
    ("asin", Func::Asin, 1, Some(1)),
    ("atan", Func::Atan, 1, Some(1)),
    ("atan2", Func::Atan2, 2, Some(2)),
    ("cos", Func::Cos, 1, Some(1)),
    ("cosh", Func::Cosh, 1, Some(1)),
    ("sin", Func::Sin, 1, Some(1)),
    ("sinh", Func::Sinh, 1, Some(1)),
    ("tan", Func::Tan, 1, Some(1)),
    ("tanh", Func::Tanh, 1, Some(1)),
    ("exp", Func::Exp, 1, Some(1)),
    ("sign", Func::Sign, 1, Some(1)),
    ("trunc", Func::Trunc, 2, Some(2)),
    ("remainder", Func::Remainder, 2, Some(2)),
    ("bitand", Func::BitAnd, 2, Some(2)),
    ("bitor", Func::BitOr, 2, Some(2)),
    ("bitxor", Func::BitXor, 2, Some(2)),
    ("bitnot", Func::BitNot, 1, Some(1)),
    ("chr", Func::Chr, 1, Some(1)),
    ("lpad", Func::Lpad, 2, Some(2)),
    ("rpad", Func::Rpad, 2, Some(2)),
    ("ltrim", Func::Ltrim, 1, Some(1)),
    ("rtrim", Func::Rtrim, 1, Some(1)),
    ("numbytes", Func::NumBytes, 1, Some(1)),
    ("sha1", Func::Sha1, 1, Some(1)),
    ("sha224", Func::Sha224, 1, Some(1)),
    ("sha384", Func::Sha384, 1, Some(1)),
    ("sha512", Func::Sha512, 1, Some(1)),
    ("regexp_substr", Func::RegexpSubstr, 2, Some(2)),
    ("decode", Func::Decode, 2, Some(2)),
    ("rand", Func::Rand, 0, Some(0)),
];

/// Longest padding `lpad`/`rpad` add (AWS: 1000).
const MAX_PADDING: i64 = 1000;

/// Longest regular expression pattern accepted (compiled size is bounded too).
const MAX_REGEX_LEN: usize = 1024;

/// The arity a function accepts, for error messages.
pub(crate) struct Arity {
    pub min: usize,
    pub max: Option<usize>,
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max {
            Some(max) if max == self.min => write!(f, "{max}"),
            Some(max) => write!(f, "{} to {max}", self.min),
            None => write!(f, "{} or more", self.min),
        }
    }
}

impl Func {
    /// The function named `name` (case-insensitive) and its arity.
    pub(crate) fn lookup(name: &str) -> Option<(Func, Arity)> {
        FUNCTIONS
            .iter()
            .find(|(n, ..)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f, min, max)| (f, Arity { min, max }))
    }

    /// True for the functions whose second argument is a regular expression.
    pub(crate) fn takes_regex(self) -> bool {
        matches!(
            self,
            Func::RegexpMatches | Func::RegexpReplace | Func::RegexpSubstr
        )
    }
}

/// Compiles a regular expression argument, bounded in size.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regular expression longer than {MAX_REGEX_LEN} bytes"
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// Runs `call` on evaluated `args` (as many as its arity allows).
pub(crate) fn call<'a>(call: &'a Call, args: Vec<Val<'a>>, scope: &Scope<'a, '_>) -> Val<'a> {
    let whole = scope.whole_as_int;
    let arg = |i: usize| args.get(i).unwrap_or(&Val::Undefined);
    match call.func {
        Func::Topic => topic(scope, args.first()),
        Func::ClientId => Val::string(scope.message.client_id.unwrap_or("n/a")),
        Func::Principal => scope.message.principal.map_or(Val::Undefined, Val::string),
        Func::Timestamp => Val::int(scope.message.received_at_ms),
        Func::NewUuid => Val::string(uuid::Uuid::new_v4().to_string()),
        Func::TraceId => scope
            .message
            .properties
            .trace_id
            .map_or(Val::Undefined, Val::string),
        Func::Abs => match arg(0).to_num() {
            Some(Num::Int(i)) => Val::num(
                i.checked_abs().map_or(Num::Dec((i as f64).abs()), Num::Int),
                whole,
            ),
            Some(Num::Dec(d)) => Val::num(Num::Dec(d.abs()), whole),
            None => Val::Undefined,
        },
        Func::Ceil => to_int(arg(0), f64::ceil),
        Func::Floor => to_int(arg(0), f64::floor),
        Func::Round => to_int(arg(0), f64::round),
        Func::Mod => arith(ArithOp::Rem, arg(0), arg(1), whole),
        Func::Power => float2(arg(0), arg(1), whole, f64::powf),
        Func::Sqrt => float1(arg(0), whole, |x| (x >= 0.0).then(|| x.sqrt())),
        Func::Ln => float1(arg(0), whole, |x| (x > 0.0).then(|| x.ln())),
        Func::Log => float1(arg(0), whole, |x| (x > 0.0).then(|| x.log10())),
        Func::Lower => string1(arg(0), |s| s.to_lowercase()),
        Func::Upper => string1(arg(0), |s| s.to_uppercase()),
        Func::Trim => string1(arg(0), |s| s.trim().to_string()),
        Func::Substring => substring(arg(0), arg(1), args.get(2)),
        Func::Concat => concat(&args),
        Func::Length => match arg(0).to_str() {
            Some(s) => Val::int(i64::try_from(s.chars().count()).unwrap_or(i64::MAX)),
            None => Val::Undefined,
        },
        Func::StartsWith => strings2(arg(0), arg(1), |a, b| Val::bool(a.starts_with(b))),
        Func::EndsWith => strings2(arg(0), arg(1), |a, b| Val::bool(a.ends_with(b))),
        Func::IndexOf => strings2(arg(0), arg(1), |a, b| {
            Val::int(a.find(b).map_or(-1, |byte| {
                i64::try_from(a[..byte].chars().count()).unwrap_or(i64::MAX)
            }))
        }),
        Func::Replace => match (arg(0).to_str(), arg(1).to_str(), arg(2).to_str()) {
            (Some(s), Some(from), Some(to)) => Val::string(s.replace(from.as_ref(), &to)),
            _ => Val::Undefined,
        },
        Func::RegexpMatches => with_regex(call, arg(1), |re| match arg(0).to_str() {
            Some(s) => Val::bool(re.is_match(&s)),
            None => Val::Undefined,
        }),
        Func::RegexpReplace => with_regex(call, arg(1), |re| {
            match (arg(0).to_str(), arg(2).to_str()) {
                (Some(s), Some(with)) => {
                    Val::string(re.replace_all(&s, with.as_ref()).into_owned())
                }
                _ => Val::Undefined,
            }
        }),
        Func::IsNull => Val::bool(matches!(arg(0).json(), Some(Value::Null))),
        Func::IsUndefined => Val::bool(arg(0).is_undefined()),
        Func::IsString => Val::bool(matches!(arg(0).json(), Some(Value::String(_)))),
        Func::IsNumber => Val::bool(matches!(arg(0).json(), Some(Value::Number(_)))),
        Func::IsBoolean => Val::bool(matches!(arg(0).json(), Some(Value::Bool(_)))),
        Func::IsObject => Val::bool(matches!(arg(0).json(), Some(Value::Object(_)))),
        Func::IsArray => Val::bool(matches!(arg(0).json(), Some(Value::Array(_)))),
        Func::Get => {
            let mut args = args.into_iter();
            let container = args.next().unwrap_or(Val::Undefined);
            let key = args.next().unwrap_or(Val::Undefined);
            get(container, &key)
        }
        Func::Encode => encode(arg(0), arg(1)),
        Func::Md5 => string1(arg(0), |s| hex(&Md5::digest(s.as_bytes()))),
        Func::Sha256 => string1(arg(0), |s| hex(&Sha256::digest(s.as_bytes()))),
        Func::ParseTime => parse_time(arg(0), arg(1), args.get(2)),
        Func::TimeToEpoch => time_to_epoch(arg(0), arg(1)),
        Func::GetMqttProperty => mqtt_property(scope, arg(0)),
        Func::GetUserProperties => user_properties(scope, arg(0)),
        Func::Acos => float1(arg(0), whole, |x| {
            (-1.0..=1.0).contains(&x).then(|| x.acos())
        }),
        Func::Asin => float1(arg(0), whole, |x| {
            (-1.0..=1.0).contains(&x).then(|| x.asin())
        }),
        Func::Atan => float1(arg(0), whole, |x| Some(x.atan())),
        Func::Atan2 => float2(arg(0), arg(1), whole, f64::atan2),
        Func::Cos => float1(arg(0), whole, |x| Some(x.cos())),
        Func::Cosh => float1(arg(0), whole, |x| Some(x.cosh()).filter(|r| r.is_finite())),
        Func::Sin => float1(arg(0), whole, |x| Some(x.sin())),
        Func::Sinh => float1(arg(0), whole, |x| Some(x.sinh()).filter(|r| r.is_finite())),
        Func::Tan => float1(arg(0), whole, |x| Some(x.tan())),
        Func::Tanh => float1(arg(0), whole, |x| Some(x.tanh())),
        Func::Exp => float1(arg(0), whole, |x| Some(x.exp()).filter(|r| r.is_finite())),
        Func::Sign => match arg(0).to_num() {
            Some(Num::Int(i)) => Val::int(i.signum()),
            Some(Num::Dec(d)) => Val::int(if d > 0.0 {
                1
            } else if d < 0.0 {
                -1
            } else {
                0
            }),
            None => Val::Undefined,
        },
        Func::Trunc => trunc(arg(0), arg(1), whole),
        Func::Remainder => arith(ArithOp::Rem, arg(0), arg(1), whole),
        Func::BitAnd => ints2(arg(0), arg(1), |a, b| a & b),
        Func::BitOr => ints2(arg(0), arg(1), |a, b| a | b),
        Func::BitXor => ints2(arg(0), arg(1), |a, b| a ^ b),
        Func::BitNot => match arg(0).to_num() {
            Some(Num::Int(i)) => Val::int(!i),
            _ => Val::Undefined,
        },
        Func::Chr => match arg(0).to_num() {
            Some(Num::Int(i)) => u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .map_or(Val::Undefined, |c| Val::string(c.to_string())),
            _ => Val::Undefined,
        },
        Func::Lpad => pad(arg(0), arg(1), true),
        Func::Rpad => pad(arg(0), arg(1), false),
        Func::Ltrim => string1(arg(0), |s| s.trim_start().to_string()),
        Func::Rtrim => string1(arg(0), |s| s.trim_end().to_string()),
        Func::NumBytes => match arg(0).to_str() {
            Some(s) => Val::int(i64::try_from(s.len()).unwrap_or(i64::MAX)),
            None => Val::Undefined,
        },
        Func::Sha1 => string1(arg(0), |s| hex(&sha1::Sha1::digest(s.as_bytes()))),
        Func::Sha224 => string1(arg(0), |s| hex(&sha2::Sha224::digest(s.as_bytes()))),
        Func::Sha384 => string1(arg(0), |s| hex(&sha2::Sha384::digest(s.as_bytes()))),
        Func::Sha512 => string1(arg(0), |s| hex(&sha2::Sha512::digest(s.as_bytes()))),
        Func::RegexpSubstr => with_regex(call, arg(1), |re| match arg(0).to_str() {
            Some(s) => Val::string(re.find(&s).map_or("", |m| m.as_str())),
            None => Val::Undefined,
        }),
        Func::Decode => decode(arg(0), arg(1)),
        Func::Rand => rand().map_or(Val::Undefined, |r| Val::num(Num::Dec(r), false)),
        Func::GetThingShadow => {
            let shadow_name = if args.len() == 3 {
                arg(1).to_str()
            } else {
                None
            };
            match (&scope.env.shadows, arg(0).to_str()) {
                (Some(reader), Some(thing)) if !thing.is_empty() => reader
                    .read_shadow(&thing, shadow_name.as_deref())
                    .map_or(Val::Undefined, Val::Own),
                _ => Val::Undefined,
            }
        }
        Func::AwsLambda => scope.function_result(call.site, arg(0), arg(1)),
    }
}

fn topic<'a>(scope: &Scope<'a, '_>, n: Option<&Val<'_>>) -> Val<'a> {
    let topic = scope.message.topic;
    let Some(n) = n else {
        return Val::string(topic);
    };
    match n.to_num() {
        Some(Num::Int(n)) if n >= 1 => usize::try_from(n - 1)
            .ok()
            .and_then(|i| topic.split('/').nth(i))
            .map_or(Val::Undefined, Val::string),
        _ => Val::Undefined,
    }
}

/// `get_mqtt_property(name)`: `content_type`, `format_indicator` (`UTF8_DATA` or
/// `UNSPECIFIED_BYTES`), `response_topic`, `correlation_data` (base64) of the message; Undefined
/// when it did not carry the property.
fn mqtt_property<'a>(scope: &Scope<'a, '_>, name: &Val<'_>) -> Val<'a> {
    let properties = &scope.message.properties;
    let Some(name) = name.to_str() else {
        return Val::Undefined;
    };
    match name.as_ref() {
        "content_type" => properties.content_type.map_or(Val::Undefined, Val::string),
        "format_indicator" => properties
            .payload_format_utf8
            .map_or(Val::Undefined, |utf8| {
                Val::string(if utf8 {
                    "UTF8_DATA"
                } else {
                    "UNSPECIFIED_BYTES"
                })
            }),
        "response_topic" => properties
            .response_topic
            .map_or(Val::Undefined, Val::string),
        "correlation_data" => properties.correlation_data.map_or(Val::Undefined, |data| {
            Val::string(base64::engine::general_purpose::STANDARD.encode(data))
        }),
        _ => Val::Undefined,
    }
}

/// `get_user_properties(key)`: every value of user property `key`, in order, as an array;
/// Undefined when the message has none.
fn user_properties<'a>(scope: &Scope<'a, '_>, key: &Val<'_>) -> Val<'a> {
    let Some(key) = key.to_str() else {
        return Val::Undefined;
    };
    let values: Vec<Value> = scope
        .message
        .properties
        .user_properties
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| Value::String(v.to_string()))
        .collect();
    if values.is_empty() {
        Val::Undefined
    } else {
        Val::Own(Value::Array(values))
    }
}

/// `trunc(x, digits)`: `x` cut (towards zero) to `digits` decimal places.
fn trunc(x: &Val<'_>, digits: &Val<'_>, whole: bool) -> Val<'static> {
    let Some(Num::Int(digits)) = digits.to_num() else {
        return Val::Undefined;
    };
    match x.to_num() {
        Some(Num::Int(i)) => Val::int(i),
        Some(Num::Dec(d)) => {
            let scale = 10f64.powi(i32::try_from(digits.clamp(0, 300)).unwrap_or(0));
            Val::num(Num::Dec((d * scale).trunc() / scale), whole)
        }
        None => Val::Undefined,
    }
}

fn ints2(a: &Val<'_>, b: &Val<'_>, f: fn(i64, i64) -> i64) -> Val<'static> {
    match (a.to_num(), b.to_num()) {
        (Some(Num::Int(a)), Some(Num::Int(b))) => Val::int(f(a, b)),
        _ => Val::Undefined,
    }
}

/// `lpad(s, n)` / `rpad(s, n)`: `s` with `n` spaces added on the left / right.
fn pad(s: &Val<'_>, n: &Val<'_>, left: bool) -> Val<'static> {
    let (Some(s), Some(Num::Int(n))) = (s.to_str(), n.to_num()) else {
        return Val::Undefined;
    };
    if !(0..=MAX_PADDING).contains(&n) {
        return Val::Undefined;
    }
    let spaces = " ".repeat(usize::try_from(n).unwrap_or(0));
    Val::string(if left {
        format!("{spaces}{s}")
    } else {
        format!("{s}{spaces}")
    })
}

/// `decode(value, 'base64')`: the decoded bytes as a string (Undefined unless they are UTF-8).
fn decode(v: &Val<'_>, encoding: &Val<'_>) -> Val<'static> {
    if !encoding
        .to_str()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
    {
        return Val::Undefined;
    }
    v.to_str()
        .and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map_or(Val::Undefined, Val::string)
}

/// A random number in [0, 1).
fn rand() -> Option<f64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).ok()?;
    Some((u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64)
}

/// `ceil`, `floor`, `round`: an Int stays; a Decimal becomes the Int the rounding gives.
fn to_int(v: &Val<'_>, round: fn(f64) -> f64) -> Val<'static> {
    match v.to_num() {
        Some(Num::Int(i)) => Val::int(i),
        Some(Num::Dec(d)) => {
            let r = round(d);
            if r.abs() < 9.2e18 {
                Val::int(r as i64)
            } else {
                Val::num(Num::Dec(r), false)
            }
        }
        None => Val::Undefined,
    }
}

fn float1(v: &Val<'_>, whole: bool, f: impl Fn(f64) -> Option<f64>) -> Val<'static> {
    v.to_num()
        .and_then(|n| f(n.as_f64()))
        .map_or(Val::Undefined, |r| Val::num(Num::Dec(r), whole))
}

fn float2(a: &Val<'_>, b: &Val<'_>, whole: bool, f: fn(f64, f64) -> f64) -> Val<'static> {
    match (a.to_num(), b.to_num()) {
        (Some(x), Some(y)) => Val::num(Num::Dec(f(x.as_f64(), y.as_f64())), whole),
        _ => Val::Undefined,
    }
}

fn string1(v: &Val<'_>, f: impl Fn(&str) -> String) -> Val<'static> {
    v.to_str().map_or(Val::Undefined, |s| Val::string(f(&s)))
}

fn strings2(a: &Val<'_>, b: &Val<'_>, f: impl Fn(&str, &str) -> Val<'static>) -> Val<'static> {
    match (a.to_str(), b.to_str()) {
        (Some(a), Some(b)) => f(&a, &b),
        _ => Val::Undefined,
    }
}

/// An index argument: Ints as they are, Decimals rounded down (AWS: `substring("012345",
/// 2.745)` is `"2345"`).
fn index(v: &Val<'_>) -> Option<i64> {
    match v.to_num()? {
        Num::Int(i) => Some(i),
        Num::Dec(d) => Some(d.floor().clamp(i64::MIN as f64, i64::MAX as f64) as i64),
    }
}

/// `substring(s, start[, end])`: 0-based, `end` exclusive, both clamped to the string.
fn substring(s: &Val<'_>, start: &Val<'_>, end: Option<&Val<'_>>) -> Val<'static> {
    let Some(s) = s.to_str() else {
        return Val::Undefined;
    };
    let Some(start) = index(start) else {
        return Val::Undefined;
    };
    let len = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let end = match end {
        Some(e) => match index(e) {
            Some(e) => e,
            None => return Val::Undefined,
        },
        None => len,
    };
    let start = start.clamp(0, len);
    let end = end.clamp(0, len);
    if end <= start {
        return Val::string("");
    }
    let taken = usize::try_from(end - start).unwrap_or(0);
    let skipped = usize::try_from(start).unwrap_or(0);
    Val::string(s.chars().skip(skipped).take(taken).collect::<String>())
}

/// `concat(...)`: with any array argument, an array (arrays spliced, other values appended);
/// otherwise the arguments as strings, joined. No arguments, or an Undefined one: Undefined.
fn concat(args: &[Val<'_>]) -> Val<'static> {
    if args.is_empty() || args.iter().any(|a| a.json().is_none()) {
        return Val::Undefined;
    }
    if args
        .iter()
        .any(|a| matches!(a.json(), Some(Value::Array(_))))
    {
        let mut out = Vec::new();
        for a in args {
            match a.json() {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                Some(v) => out.push(v.clone()),
                None => return Val::Undefined,
            }
        }
        return Val::Own(Value::Array(out));
    }
    let mut out = String::new();
    for a in args {
        match a.to_str() {
            Some(s) => out.push_str(&s),
            None => return Val::Undefined,
        }
    }
    Val::string(out)
}

fn with_regex<'a>(call: &'a Call, pattern: &Val<'_>, f: impl FnOnce(&Regex) -> Val<'a>) -> Val<'a> {
    if let Some(re) = &call.regex {
        return f(re);
    }
    match pattern.to_str().map(|p| compile_regex(&p)) {
        Some(Ok(re)) => f(&re),
        _ => Val::Undefined,
    }
}

/// `get(array, index)` or `get(object, key)`; borrows from the container when it can.
fn get<'a>(container: Val<'a>, key: &Val<'_>) -> Val<'a> {
    fn pick<'v>(c: &'v Value, key: &Val<'_>) -> Option<&'v Value> {
        match c {
            Value::Array(items) => {
                let i = usize::try_from(index(key)?).ok()?;
                items.get(i)
            }
            Value::Object(map) => map.get(key.to_str()?.as_ref()),
            _ => None,
        }
    }
    match container {
        Val::Ref(c) => pick(c, key).map_or(Val::Undefined, Val::Ref),
        Val::Own(c) => pick(&c, key).map_or(Val::Undefined, |v| Val::Own(v.clone())),
        Val::Undefined | Val::Raw(_) => Val::Undefined,
    }
}

/// `encode(value, 'base64')`: the payload's bytes for `*`, a string's UTF-8 bytes, or the JSON
/// text of any other value.
fn encode(v: &Val<'_>, encoding: &Val<'_>) -> Val<'static> {
    if !encoding
        .to_str()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
    {
        return Val::Undefined;
    }
    let bytes: Cow<'_, [u8]> = match v {
        Val::Raw(b) => Cow::Borrowed(b),
        Val::Undefined => return Val::Undefined,
        other => match other.json() {
            Some(Value::String(s)) => Cow::Borrowed(s.as_bytes()),
            Some(json) => Cow::Owned(json.to_string().into_bytes()),
            None => return Val::Undefined,
        },
    };
    Val::string(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `parse_time(pattern, epochMs[, zone])`.
fn parse_time(pattern: &Val<'_>, ms: &Val<'_>, zone: Option<&Val<'_>>) -> Val<'static> {
    let Some(pattern) = pattern.to_str().and_then(|p| Pattern::parse(&p)) else {
        return Val::Undefined;
    };
    let Some(ms) = index(ms) else {
        return Val::Undefined;
    };
    let offset = match zone {
        Some(z) => match z.to_str().and_then(|z| zone_offset(&z)) {
            Some(o) => o,
            None => return Val::Undefined,
        },
        None => time::UtcOffset::UTC,
    };
    from_epoch_ms(ms, offset).map_or(Val::Undefined, |t| Val::string(pattern.format(t)))
}

/// `time_to_epoch(text, pattern)`: epoch milliseconds.
fn time_to_epoch(text: &Val<'_>, pattern: &Val<'_>) -> Val<'static> {
    let (Some(text), Some(pattern)) = (text.to_str(), pattern.to_str()) else {
        return Val::Undefined;
    };
    Pattern::parse(&pattern)
        .and_then(|p| p.parse_instant(&text))
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .map_or(Val::Undefined, Val::int)
}
