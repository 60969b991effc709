//! Reading a CTranslate2 `model.bin` directly, with no CTranslate2.
//!
//! The layout is what CTranslate2's `ModelSpec._serialize` (python/ctranslate2/specs/
//! model_spec.py) writes, all integers little-endian:
//!
//! ```text
//! u32 binary version (6)   string spec name ("WhisperSpec")   u32 spec revision
//! u32 variable count, then for each variable:
//!     string name   u8 rank   u32 × rank dims   u8 dtype   u32 byte count   bytes
//! u32 alias count, then for each alias:  string alias   string variable name
//! string = u16 length (with the trailing NUL) + UTF-8 bytes + NUL
//! ```
//!
//! dtype ids are CTranslate2's `DataType`: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
//! 5 bfloat16. The pinned tiny.en model stores every tensor as float16 and a few scalars
//! (`decoder/num_heads`, `decoder/activation`, …) as int8/int16; quantized models would also
//! carry `…/weight_scale` variables, which this reader refuses rather than misreads.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

/// The binary versions this reader understands (the format has not changed since 5).
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("the file ends inside {what} (offset {offset})")]
    Truncated { what: &'static str, offset: usize },
    #[error("binary version {0} is not one this reader knows ({SUPPORTED_VERSIONS:?})")]
    UnsupportedVersion(u32),
    #[error("the spec is {found:?}, not {expected:?}")]
    WrongSpec { expected: String, found: String },
    #[error("variable {name}: unsupported dtype id {dtype}")]
    UnsupportedDtype { name: String, dtype: u8 },
    #[error("variable {name}: {bytes} bytes do not hold {dims:?} of {dtype:?}")]
    SizeMismatch {
        name: String,
        dims: Vec<usize>,
        dtype: Ct2Dtype,
        bytes: usize,
    },
    #[error("variable {name} is quantized ({dtype:?} with scales); only float weights are read")]
    Quantized { name: String, dtype: Ct2Dtype },
    #[error("an alias {alias} names {target}, which the file does not hold")]
    DanglingAlias { alias: String, target: String },
    #[error("the model has no variable {0}")]
    Missing(String),
    #[error("variable {name}: {reason}")]
    Tensor { name: String, reason: String },
}

/// CTranslate2's storage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One variable as stored: its shape, type and raw little-endian bytes (borrowed from the
/// file, so loading never holds two copies of the weights).
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    pub dims: Vec<usize>,
    pub dtype: Ct2Dtype,
    pub bytes: &'a [u8],
}

impl Variable<'_> {
    /// Row `r` of a floating-point matrix (`dims` = `[rows, cols]`), as `f32`, into `out`.
    /// `false` when the variable is not such a matrix or `r` is out of range.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> bool {
        let [rows, cols] = self.dims[..] else {
            return false;
        };
        if r >= rows || out.len() != cols {
            return false;
        }
        let size = self.dtype.size();
        let bytes = &self.bytes[r * cols * size..(r + 1) * cols * size];
        let chunks = bytes.chunks_exact(size);
        match self.dtype {
            Ct2Dtype::F16 => chunks
                .zip(out)
                .for_each(|(b, o)| *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Ct2Dtype::Bf16 => chunks
                .zip(out)
                .for_each(|(b, o)| *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            Ct2Dtype::F32 => chunks
                .zip(out)
                .for_each(|(b, o)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => return false,
        }
        true
    }

    /// A rank-0 integer (CTranslate2 stores spec options such as `num_heads` this way).
    pub fn scalar_int(&self) -> Option<i64> {
        if !self.dims.is_empty() {
            return None;
        }
        let b = &self.bytes;
        Some(match self.dtype {
            Ct2Dtype::I8 => i64::from(*b.first()? as i8),
            Ct2Dtype::I16 => i64::from(i16::from_le_bytes(b.get(..2)?.try_into().ok()?)),
            Ct2Dtype::I32 => i64::from(i32::from_le_bytes(b.get(..4)?.try_into().ok()?)),
            _ => return None,
        })
    }
}

/// The variables of a model file, aliases resolved (e.g. Whisper's output projection is an
/// alias of the token embedding: the weights are tied).
#[derive(Debug)]
pub struct Ct2Model<'a> {
    pub spec: String,
    variables: HashMap<String, Variable<'a>>,
    aliases: HashMap<String, String>,
}

impl<'a> Ct2Model<'a> {
    /// Parses a whole `model.bin` held in memory; the variables borrow from `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Ct2Error> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u32("the binary version")?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Ct2Error::UnsupportedVersion(version));
        }
        let spec = r.string("the spec name")?;
        let _revision = r.u32("the spec revision")?;
        let count = r.u32("the variable count")? as usize;
        let mut variables = HashMap::with_capacity(count.min(4096));
        for _ in 0..count {
            let name = r.string("a variable name")?;
            let rank = r.u8("a rank")? as usize;
            let dims = (0..rank)
                .map(|_| r.u32("a dimension").map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let dtype_id = r.u8("a dtype")?;
            let dtype = Ct2Dtype::from_id(dtype_id).ok_or_else(|| Ct2Error::UnsupportedDtype {
                name: name.clone(),
                dtype: dtype_id,
            })?;
            let len = r.u32("a byte count")? as usize;
            let data = r.take(len, "a variable's data")?;
            let expected = dims.iter().product::<usize>() * dtype.size();
            if expected != len {
                return Err(Ct2Error::SizeMismatch {
                    name,
                    dims,
                    dtype,
                    bytes: len,
                });
            }
            variables.insert(
                name,
                Variable {
                    dims,
                    dtype,
                    bytes: data,
                },
            );
        }
        let alias_count = r.u32("the alias count")? as usize;
        let mut aliases = HashMap::new();
        for _ in 0..alias_count {
            let alias = r.string("an alias")?;
            let target = r.string("an alias target")?;
            if !variables.contains_key(&target) {
                return Err(Ct2Error::DanglingAlias { alias, target });
            }
            aliases.insert(alias, target);
        }
        if let Some(name) = variables.keys().find(|n| n.ends_with("_scale")) {
            let dtype = variables[name].dtype;
            return Err(Ct2Error::Quantized {
                name: name.clone(),
                dtype,
            });
        }
        Ok(Self {
            spec,
            variables,
            aliases,
        })
    }

    pub fn expect_spec(&self, expected: &str) -> Result<(), Ct2Error> {
        if self.spec == expected {
            Ok(())
        } else {
            Err(Ct2Error::WrongSpec {
                expected: expected.to_string(),
                found: self.spec.clone(),
            })
        }
    }

    /// The variable called `name`, directly or through an alias.
    pub fn get(&self, name: &str) -> Result<&Variable<'a>, Ct2Error> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.variables
            .get(name)
            .ok_or_else(|| Ct2Error::Missing(name.to_string()))
    }

    /// A spec option stored as a rank-0 integer.
    pub fn scalar(&self, name: &str) -> Result<i64, Ct2Error> {
        self.get(name)?
            .scalar_int()
            .ok_or_else(|| Ct2Error::Tensor {
                name: name.to_string(),
                reason: "not an integer scalar".to_string(),
            })
    }

    /// The floating-point variable `name` as an `f32` tensor on `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor, Ct2Error> {
        let var = self.get(name)?;
        let dtype = match var.dtype {
            Ct2Dtype::F32 => DType::F32,
            Ct2Dtype::F16 => DType::F16,
            Ct2Dtype::Bf16 => DType::BF16,
            other => {
                return Err(Ct2Error::Tensor {
                    name: name.to_string(),
                    reason: format!("{other:?} is not a floating-point type"),
                });
            }
        };
        let tensor_error = |e: candle_core::Error| Ct2Error::Tensor {
            name: name.to_string(),
            reason: e.to_string(),
        };
        Tensor::from_raw_buffer(var.bytes, dtype, &var.dims, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(tensor_error)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Ct2Error::Truncated {
                what,
                offset: self.at,
            });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let len = self.u16(what)? as usize;
        let b = self.take(len, what)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a model file the way `ModelSpec._serialize` does.
    pub(crate) struct Writer(
        Vec<u8>,
        Vec<(String, Vec<usize>, u8, Vec<u8>)>,
        Vec<(String, String)>,
    );

    impl Writer {
        pub(crate) fn new() -> Self {
            Self(Vec::new(), Vec::new(), Vec::new())
        }

        pub(crate) fn var(mut self, name: &str, dims: &[usize], dtype: u8, data: Vec<u8>) -> Self {
            self.1.push((name.to_string(), dims.to_vec(), dtype, data));
            self
        }

        pub(crate) fn f16(self, name: &str, dims: &[usize], values: &[f32]) -> Self {
            let data = values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect();
            self.var(name, dims, 4, data)
        }

        pub(crate) fn alias(mut self, alias: &str, target: &str) -> Self {
            self.2.push((alias.to_string(), target.to_string()));
            self
        }

        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend(((s.len() + 1) as u16).to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        }

        pub(crate) fn finish(mut self, spec: &str) -> Vec<u8> {
            let out = &mut self.0;
            out.extend(6u32.to_le_bytes());
            Self::string(out, spec);
            out.extend(3u32.to_le_bytes());
            out.extend((self.1.len() as u32).to_le_bytes());
            for (name, dims, dtype, data) in &self.1 {
                Self::string(out, name);
                out.push(dims.len() as u8);
                for d in dims {
                    out.extend((*d as u32).to_le_bytes());
                }
                out.push(*dtype);
                out.extend((data.len() as u32).to_le_bytes());
                out.extend(data);
            }
            out.extend((self.2.len() as u32).to_le_bytes());
            for (a, t) in &self.2 {
                Self::string(out, a);
                Self::string(out, t);
            }
            self.0
        }
    }

    #[test]
    fn float16_tensors_scalars_and_aliases_are_read_as_written() {
        let bytes = Writer::new()
            .f16(
                "decoder/embeddings/weight",
                &[2, 3],
                &[1.0, -2.0, 0.5, 0.25, 3.0, -0.125],
            )
            .var("decoder/num_heads", &[], 2, 6i16.to_le_bytes().to_vec())
            .alias("decoder/projection/weight", "decoder/embeddings/weight")
            .finish("WhisperSpec");
        let model = Ct2Model::parse(&bytes).expect("parses");
        model.expect_spec("WhisperSpec").expect("spec");
        assert_eq!(model.scalar("decoder/num_heads").expect("heads"), 6);
        let t = model
            .tensor("decoder/projection/weight", &Device::Cpu)
            .expect("alias resolves");
        assert_eq!(
            t.to_vec2::<f32>().expect("2-d"),
            vec![vec![1.0, -2.0, 0.5], vec![0.25, 3.0, -0.125]]
        );
    }

    #[test]
    fn a_truncated_file_names_where_it_ends() {
        let bytes = Writer::new()
            .f16("w", &[4], &[1.0; 4])
            .finish("WhisperSpec");
        let err = Ct2Model::parse(&bytes[..bytes.len() - 9]).expect_err("truncated");
        assert!(matches!(err, Ct2Error::Truncated { .. }), "{err}");
    }

    #[test]
    fn a_byte_count_that_disagrees_with_the_shape_is_refused() {
        let bytes = Writer::new()
            .var("w", &[4], 4, vec![0; 6])
            .finish("WhisperSpec");
        let err = Ct2Model::parse(&bytes).expect_err("size");
        assert!(matches!(err, Ct2Error::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn quantized_weights_and_other_specs_are_refused_by_name() {
        let bytes = Writer::new()
            .var("w", &[2], 1, vec![1, 2])
            .var("w_scale", &[1], 0, 1f32.to_le_bytes().to_vec())
            .finish("WhisperSpec");
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(Ct2Error::Quantized { .. })
        ));
        let bytes = Writer::new().finish("TransformerSpec");
        let other = Ct2Model::parse(&bytes).expect("parses");
        assert!(matches!(
            other.expect_spec("WhisperSpec"),
            Err(Ct2Error::WrongSpec { .. })
        ));
    }
}
