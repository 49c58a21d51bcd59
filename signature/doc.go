// Package signature extracts Robust Weight Signatures: the part of a
// robust fine-tune's difference from the pretrained model that is not
// along the clean fine-tune's (RWS = δ_c − proj_δ0 δ_c), kept for the
// shallow layers, where a corruption's effect lives, and written as a
// patch (package wpatch) that composes with others, rescales, and comes
// off bit for bit.
package signature
