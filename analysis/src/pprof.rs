//! pprof heap profiles (`export --format pprof`): a gzipped `profile.proto` that `go tool pprof`
//! reads, with the sample types of Go's heap profile.
//!
//! One sample per stack ([`crate::stacks::StackProfile`]) with four values, as Go writes them:
//! `alloc_objects`/count and `alloc_space`/bytes (allocating calls and requested bytes),
//! `inuse_objects`/count and `inuse_space`/bytes (still live at the end of the trace). Go's
//! profiles are sampled and scaled; ours count every call, so the period is 1 byte.
//!
//! A location is one return address of one module, at the address looked up (return address
//! minus one); its lines are the address's frames, innermost (inlined) first, as the format
//! wants. A frame that could not be named gets a function named like the folded export's frame
//! (`NAME+0xADDR`), so both exports list the same functions, and the mappings say they hold
//! functions: pprof then shows our names instead of trying to symbolize the addresses again.
//! `[no stack]` and `[unknown stack]` are one-line locations outside any mapping.

use std::collections::HashMap;
use std::io::Write;

use prost::Message;
use symbolize::{Place, Symbols};
use traces::{Module, StackTable};

use crate::folded::{NO_STACK, UNKNOWN_STACK};
use crate::stacks::{StackId, StackProfile};

/// profile.proto's messages, field numbers as in its public schema (only what we write).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// What the profile says about the recording besides its samples.
#[derive(Clone, Debug, Default)]
pub struct ProfileInfo {
    /// Wall clock at the start of the recording, and its length.
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// One line for the profile's comments (the trace it came from).
    pub comment: String,
}

/// Tables being filled: strings, functions, mappings and locations, each numbered once.
struct Builder<'a> {
    p: proto::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    mappings: HashMap<u32, u64>,
    /// Locations by (module id or none, address looked up), and by special name.
    locations: HashMap<(Option<u32>, u64), u64>,
    special: HashMap<&'static str, u64>,
    symbols: &'a Symbols,
}

impl Builder<'_> {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (self.string(name), self.string(file.unwrap_or("")));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        self.p.function.push(proto::Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
        });
        self.functions.insert(key, id);
        id
    }

    fn mapping(&mut self, m: &Module) -> u64 {
        if let Some(&id) = self.mappings.get(&m.id) {
            return id;
        }
        let id = self.p.mapping.len() as u64 + 1;
        let first = m
            .ranges
            .iter()
            .min_by_key(|r| r.0)
            .copied()
            .unwrap_or_default();
        let limit = m.ranges.iter().map(|r| r.1).max().unwrap_or_default();
        let (filename, build_id) = (self.string(&m.path), self.string(&m.build_id));
        self.p.mapping.push(proto::Mapping {
            id,
            memory_start: first.0,
            memory_limit: limit,
            file_offset: first.2,
            filename,
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mappings.insert(m.id, id);
        id
    }

    fn location(&mut self, place: &Place<'_>) -> u64 {
        let (key, mapping, address) = match place {
            Place::Module {
                module, file_addr, ..
            } => {
                let m = self.mapping(module);
                let addr = file_addr.wrapping_add(module.bias);
                ((Some(module.id), addr), m, addr)
            }
            Place::Unknown { addr } => ((None, *addr), 0, *addr),
        };
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let mut line = Vec::new();
        match place {
            Place::Module { frames, .. } if !frames.is_empty() => {
                for f in frames.iter() {
                    line.push(proto::Line {
                        function_id: self.function(&f.function, f.file.as_deref()),
                        line: f.line.map_or(0, i64::from),
                    });
                }
            }
            _ => line.push(proto::Line {
                function_id: self.function(&place.label(), None),
                line: 0,
            }),
        }
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            mapping_id: mapping,
            address,
            line,
        });
        self.locations.insert(key, id);
        id
    }

    fn special(&mut self, name: &'static str) -> u64 {
        if let Some(&id) = self.special.get(name) {
            return id;
        }
        let function_id = self.function(name, None);
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            line: vec![proto::Line {
                function_id,
                line: 0,
            }],
            ..proto::Location::default()
        });
        self.special.insert(name, id);
        id
    }

    fn stack(&mut self, id: StackId, seq: u64, table: &StackTable) -> Vec<u64> {
        let Some(leaf) = id else {
            return vec![self.special(NO_STACK)];
        };
        if table.node(leaf).is_none() {
            return vec![self.special(UNKNOWN_STACK)];
        }
        let symbols = self.symbols;
        symbols
            .stack(table, leaf, seq)
            .iter()
            .map(|p| self.location(p))
            .collect()
    }
}

/// The profile of `profile`'s stacks, named by `symbols`.
pub fn build(
    profile: &StackProfile,
    table: &StackTable,
    symbols: &Symbols,
    info: &ProfileInfo,
) -> proto::Profile {
    let mut b = Builder {
        p: proto::Profile::default(),
        strings: HashMap::new(),
        functions: HashMap::new(),
        mappings: HashMap::new(),
        locations: HashMap::new(),
        special: HashMap::new(),
        symbols,
    };
    b.string("");
    let vt = |b: &mut Builder<'_>, t: &str, u: &str| proto::ValueType {
        r#type: b.string(t),
        unit: b.string(u),
    };
    b.p.sample_type = vec![
        vt(&mut b, "alloc_objects", "count"),
        vt(&mut b, "alloc_space", "bytes"),
        vt(&mut b, "inuse_objects", "count"),
        vt(&mut b, "inuse_space", "bytes"),
    ];
    b.p.period_type = Some(vt(&mut b, "space", "bytes"));
    b.p.period = 1;
    b.p.time_nanos = clamp(info.start_unix_ns);
    b.p.duration_nanos = clamp(info.duration_ns);
    if !info.comment.is_empty() {
        let c = b.string(&info.comment);
        b.p.comment.push(c);
    }
    for (id, w) in profile.sorted() {
        let location_id = b.stack(id, w.first_seq, table);
        b.p.sample.push(proto::Sample {
            location_id,
            value: [w.allocs, w.bytes, w.leaked_objects, w.leaked_bytes]
                .map(clamp)
                .to_vec(),
        });
    }
    b.p
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes `profile` gzipped to `out`.
pub fn write(profile: &proto::Profile, out: impl Write) -> std::io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::StackWeights;

    #[test]
    fn samples_locations_and_strings_round_trip() {
        let mut table = StackTable::new();
        assert!(table.push(1, 0, 0x1000));
        assert!(table.push(2, 1, 0x2000));
        let mut profile = StackProfile::default();
        let w = StackWeights {
            allocs: 3,
            bytes: 300,
            leaked_objects: 1,
            leaked_bytes: 100,
            ..StackWeights::default()
        };
        profile.stacks.insert(Some(2), w.clone());
        profile.stacks.insert(None, w);
        let p = build(
            &profile,
            &table,
            &Symbols::default(),
            &ProfileInfo::default(),
        );
        let mut gz = Vec::new();
        write(&p, &mut gz).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let back = proto::Profile::decode(&raw[..]).unwrap();
        assert_eq!(back, p);
        let s = |i: i64| back.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        let types: Vec<_> = back
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes")
            ]
        );
        assert_eq!(back.sample.len(), 2);
        assert_eq!(back.sample[0].value, [3, 300, 1, 100]);
        // The stack: leaf first, each location one line naming its address.
        let names: Vec<&str> = back.sample[1]
            .location_id
            .iter()
            .map(|&id| {
                let loc = &back.location[id as usize - 1];
                let f = &back.function[loc.line[0].function_id as usize - 1];
                s(f.name)
            })
            .collect();
        assert_eq!(names, ["0x2000", "0x1000"]);
    }
}
