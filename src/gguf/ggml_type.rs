//! The ggml tensor type table: ids, names, block sizes and bytes per block.
//!
//! Mirrors `enum ggml_type` in ggml.h and `GGML_QUANT_SIZES` in gguf-py; the
//! conformance tests check every entry against gguf-py's table.

use std::fmt;

/// Why a type id read from a file is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeIdError {
    /// The id once named a type that ggml has since removed.
    Removed(&'static str),
    /// The id is not a ggml type at all.
    Unknown,
}

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:literal, $bytes:expr;)*) => {
        /// A ggml tensor type that a GGUF file may use.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types, missing_docs)]
        pub enum GgmlType {
            $($variant = $id,)*
        }

        impl GgmlType {
            /// Every type ggml still supports, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type with this id, or why there is none.
            pub fn from_id(id: u32) -> Result<Self, TypeIdError> {
                match id {
                    $($id => Ok(GgmlType::$variant),)*
                    _ => Err(removed_type_name(id).map_or(TypeIdError::Unknown, TypeIdError::Removed)),
                }
            }

            /// ggml's name for the type, as gguf-py spells it (`Q4_K`, `BF16`).
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => $name,)*
                }
            }

            /// Elements per quantization block.
            pub fn block_size(self) -> u64 {
                match self {
                    $(GgmlType::$variant => $block,)*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> u64 {
                match self {
                    $(GgmlType::$variant => $bytes,)*
                }
            }
        }
    };
}

/// Elements in a k-quant super-block.
const QK_K: u64 = 256;

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 2 + 16;
    Q4_1 = 3, "Q4_1", 32, 2 + 2 + 16;
    Q5_0 = 6, "Q5_0", 32, 2 + 4 + 16;
    Q5_1 = 7, "Q5_1", 32, 2 + 2 + 4 + 16;
    Q8_0 = 8, "Q8_0", 32, 2 + 32;
    Q8_1 = 9, "Q8_1", 32, 4 + 4 + 32;
    Q2_K = 10, "Q2_K", 256, 2 + 2 + QK_K / 16 + QK_K / 4;
    Q3_K = 11, "Q3_K", 256, 2 + QK_K / 4 + QK_K / 8 + 12;
    Q4_K = 12, "Q4_K", 256, 2 + 2 + QK_K / 2 + 12;
    Q5_K = 13, "Q5_K", 256, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    Q6_K = 14, "Q6_K", 256, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    Q8_K = 15, "Q8_K", 256, 4 + QK_K + QK_K / 8;
    IQ2_XXS = 16, "IQ2_XXS", 256, 2 + QK_K / 4;
    IQ2_XS = 17, "IQ2_XS", 256, 2 + QK_K / 4 + QK_K / 32;
    IQ3_XXS = 18, "IQ3_XXS", 256, 2 + QK_K / 4 + QK_K / 8;
    IQ1_S = 19, "IQ1_S", 256, 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL = 20, "IQ4_NL", 32, 2 + 16;
    IQ3_S = 21, "IQ3_S", 256, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    IQ2_S = 22, "IQ2_S", 256, 2 + QK_K / 4 + QK_K / 16;
    IQ4_XS = 23, "IQ4_XS", 256, 2 + 2 + QK_K / 2 + QK_K / 64;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 2 + 4 * 13;
    TQ2_0 = 35, "TQ2_0", 256, 2 + 64;
    MXFP4 = 39, "MXFP4", 32, 1 + 16;
    NVFP4 = 40, "NVFP4", 64, 4 + 32;
    Q1_0 = 41, "Q1_0", 128, 2 + 16;
}

/// Names of ids ggml once used and has removed; files using them cannot be loaded.
fn removed_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2",
        5 => "Q4_3",
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        _ => return None,
    })
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_removed_ids_are_named() {
        for &ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty as u32), Ok(ty));
            assert!(ty.block_size() > 0 && ty.type_size() > 0, "{ty}");
        }
        assert_eq!(GgmlType::from_id(4), Err(TypeIdError::Removed("Q4_2")));
        assert_eq!(GgmlType::from_id(5), Err(TypeIdError::Removed("Q4_3")));
        assert_eq!(GgmlType::from_id(42), Err(TypeIdError::Unknown));
        assert_eq!(GgmlType::from_id(u32::MAX), Err(TypeIdError::Unknown));
    }

    #[test]
    fn k_quant_sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q2_K.type_size(), 84);
        assert_eq!(GgmlType::IQ4_XS.type_size(), 136);
    }
}
