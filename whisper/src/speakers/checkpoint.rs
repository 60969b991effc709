//! Reading Resemblyzer's `pretrained.pt`, a PyTorch checkpoint in the legacy (pre-1.6, not
//! zip) format that candle's `.pth` reader does not open. The file is five pickles and then
//! the raw storages:
//!
//! 1. a magic number (a 10-byte long, checked as bytes: candle's pickle reader cannot hold it);
//! 2. the protocol version, 1001;
//! 3. system info (`little_endian` must be true);
//! 4. the checkpoint: `{"model_state": {name: _rebuild_tensor_v2(storage, offset, size,
//!    stride, …)}, …}`, each storage a persistent id `("storage", FloatStorage, key, device,
//!    numel, None)`;
//! 5. the storage keys in the order their bytes follow;
//!
//! then, per key, its element count (little-endian i64) and that many elements. Pickles 2–5
//! are parsed with candle's pickle machine; the tensors are views into the storages.

use std::collections::HashMap;

use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};

use super::SpeakerError;

/// Pickle 1 as `torch.save` writes it: PROTO 2, LONG1 of 10 bytes (0x1950a86a20f9469cfc6c),
/// STOP.
const MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];
const PROTOCOL_VERSION: i64 = 1001;

fn format(what: impl Into<String>) -> SpeakerError {
    SpeakerError::Format(what.into())
}

/// What a storage holds: the f32 ones are kept, the others only skipped over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageType {
    F32,
    Other(usize),
}

impl StorageType {
    fn element_size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::Other(size) => size,
        }
    }
}

/// One tensor of the state dict: where its elements lie in which storage.
struct TensorRef {
    storage: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// The `model_state` tensors of a legacy checkpoint, as f32 tensors on the CPU.
pub(super) fn model_state(bytes: &[u8]) -> Result<HashMap<String, Tensor>, SpeakerError> {
    let rest = bytes
        .strip_prefix(&MAGIC)
        .ok_or_else(|| format("not a legacy PyTorch checkpoint (no magic number)"))?;
    let mut reader = rest;
    let protocol = next_pickle(&mut reader)?;
    if !matches!(protocol, Object::Int(v) if i64::from(v) == PROTOCOL_VERSION) {
        return Err(format(format!("unknown protocol version {protocol:?}")));
    }
    let sys_info = dict(next_pickle(&mut reader)?)?;
    if lookup(&sys_info, "little_endian") != Some(&Object::Bool(true)) {
        return Err(format("the checkpoint was written big-endian"));
    }
    let checkpoint = next_pickle(&mut reader)?;
    let mut element_sizes = HashMap::new();
    collect_storages(&checkpoint, &mut element_sizes)?;
    let keys = match next_pickle(&mut reader)? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| String::try_from(k).map_err(|k| format(format!("storage key {k:?}"))))
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(format(format!("storage keys: {other:?}"))),
    };

    // The storages follow in key order; keep the f32 ones the state dict needs.
    let mut storages: HashMap<String, Vec<f32>> = HashMap::new();
    for key in keys {
        let count = take(&mut reader, 8)?;
        let count = i64::from_le_bytes(count.try_into().map_err(|_| format("short count"))?);
        let count = usize::try_from(count).map_err(|_| format("negative storage size"))?;
        let kind = *element_sizes
            .get(&key)
            .ok_or_else(|| format(format!("storage {key} has no type")))?;
        let bytes = count
            .checked_mul(kind.element_size())
            .ok_or_else(|| format(format!("storage {key} is too large")))?;
        let data = take(&mut reader, bytes)?;
        if kind == StorageType::F32 {
            let floats = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            storages.insert(key, floats);
        }
    }

    let Object::Dict(top) = unwrap_build(checkpoint) else {
        return Err(format("the checkpoint is not a dict"));
    };
    let state = top
        .into_iter()
        .find(|(k, _)| *k == Object::Unicode("model_state".into()))
        .map(|(_, v)| v)
        .ok_or_else(|| format("no model_state"))?;
    let Object::Dict(state) = unwrap_build(state) else {
        return Err(format("model_state is not a dict"));
    };
    let mut tensors = HashMap::new();
    for (name, value) in state {
        let Ok(name) = String::try_from(name) else {
            continue;
        };
        let Some(reference) = tensor_ref(value)? else {
            continue;
        };
        let storage = storages
            .get(&reference.storage)
            .ok_or_else(|| format(format!("{name}: storage {} is not f32", reference.storage)))?;
        tensors.insert(name.clone(), view(&name, storage, &reference)?);
    }
    Ok(tensors)
}

/// Runs candle's pickle machine over the next pickle in `reader`, leaving it after the STOP.
fn next_pickle(reader: &mut &[u8]) -> Result<Object, SpeakerError> {
    let mut stack = Stack::empty();
    stack
        .read_loop(reader)
        .map_err(|e| format(format!("pickle: {e}")))?;
    stack.finalize().map_err(|e| format(format!("pickle: {e}")))
}

fn take<'a>(reader: &mut &'a [u8], n: usize) -> Result<&'a [u8], SpeakerError> {
    if reader.len() < n {
        return Err(format("the file ends inside a storage"));
    }
    let (head, tail) = reader.split_at(n);
    *reader = tail;
    Ok(head)
}

fn dict(object: Object) -> Result<Vec<(Object, Object)>, SpeakerError> {
    match unwrap_build(object) {
        Object::Dict(d) => Ok(d),
        other => Err(format(format!("expected a dict, found {other:?}"))),
    }
}

fn lookup<'a>(dict: &'a [(Object, Object)], key: &str) -> Option<&'a Object> {
    dict.iter()
        .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
        .map(|(_, v)| v)
}

/// An `OrderedDict` with attributes (a state dict's `_metadata`) comes as BUILD over the dict.
fn unwrap_build(object: Object) -> Object {
    match object {
        Object::Build { callable, .. } => unwrap_build(*callable),
        other => other,
    }
}

/// Every storage the checkpoint refers to, with its element size by type.
fn collect_storages(
    object: &Object,
    sizes: &mut HashMap<String, StorageType>,
) -> Result<(), SpeakerError> {
    match object {
        Object::PersistentLoad(id) => {
            let Object::Tuple(parts) = id.as_ref() else {
                return Err(format(format!("persistent id {id:?}")));
            };
            if let [
                _,
                Object::Class { class_name, .. },
                Object::Unicode(key),
                ..,
            ] = parts.as_slice()
            {
                let size = match class_name.as_str() {
                    "FloatStorage" => StorageType::F32,
                    "IntStorage" => StorageType::Other(4),
                    "DoubleStorage" | "LongStorage" => StorageType::Other(8),
                    "HalfStorage" | "BFloat16Storage" | "ShortStorage" => StorageType::Other(2),
                    "ByteStorage" | "CharStorage" | "BoolStorage" => StorageType::Other(1),
                    other => return Err(format(format!("unknown storage type {other}"))),
                };
                sizes.insert(key.clone(), size);
            }
            Ok(())
        }
        Object::Tuple(items) | Object::List(items) => items
            .iter()
            .try_for_each(|item| collect_storages(item, sizes)),
        Object::Dict(pairs) => pairs.iter().try_for_each(|(k, v)| {
            collect_storages(k, sizes)?;
            collect_storages(v, sizes)
        }),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            collect_storages(callable, sizes)?;
            collect_storages(args, sizes)
        }
        _ => Ok(()),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)` of a float storage, or `None` for
/// anything else in the state dict.
fn tensor_ref(value: Object) -> Result<Option<TensorRef>, SpeakerError> {
    let Object::Reduce { callable, args } = value else {
        return Ok(None);
    };
    if !matches!(callable.as_ref(), Object::Class { class_name, .. } if class_name == "_rebuild_tensor_v2")
    {
        return Ok(None);
    }
    let Object::Tuple(args) = *args else {
        return Err(format("tensor arguments are not a tuple"));
    };
    let [Object::PersistentLoad(id), offset, shape, stride, ..] = args.as_slice() else {
        return Err(format("short tensor arguments"));
    };
    let Object::Tuple(id) = id.as_ref() else {
        return Err(format("storage id is not a tuple"));
    };
    let [
        _,
        Object::Class { class_name, .. },
        Object::Unicode(storage),
        ..,
    ] = id.as_slice()
    else {
        return Err(format("storage id"));
    };
    if class_name != "FloatStorage" {
        return Ok(None);
    }
    let dims = |o: &Object| -> Result<Vec<usize>, SpeakerError> {
        Vec::<usize>::try_from(o.clone()).map_err(|o| format(format!("dimensions {o:?}")))
    };
    let offset = match offset {
        Object::Int(v) => usize::try_from(*v).ok(),
        Object::Long(v) => usize::try_from(*v).ok(),
        _ => None,
    }
    .ok_or_else(|| format("tensor offset"))?;
    Ok(Some(TensorRef {
        storage: storage.clone(),
        offset,
        shape: dims(shape)?,
        stride: dims(stride)?,
    }))
}

/// The tensor `reference` describes, copied out of its storage; only contiguous row-major
/// layouts occur in a state dict.
fn view(name: &str, storage: &[f32], reference: &TensorRef) -> Result<Tensor, SpeakerError> {
    let mut expected = 1;
    for (dim, stride) in reference.shape.iter().zip(&reference.stride).rev() {
        if *stride != expected && *dim > 1 {
            return Err(format(format!("{name} is not contiguous")));
        }
        expected *= dim;
    }
    let elements = reference
        .offset
        .checked_add(expected)
        .filter(|end| *end <= storage.len())
        .map(|end| &storage[reference.offset..end])
        .ok_or_else(|| format(format!("{name} lies outside its storage")))?;
    Tensor::from_slice(elements, reference.shape.as_slice(), &Device::Cpu)
        .map_err(SpeakerError::from)
}
