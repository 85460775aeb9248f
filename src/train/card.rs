//! A student's card: what a saved model needs to be used on new images (its architecture, its
//! input, the normalisation it was trained with and the class names). Every student a run saves
//! carries it in the safetensors metadata (key [`ModelCard::META_KEY`], JSON), so `predict` on a
//! PNG needs nothing but the file; the page's Download also saves it as a JSON file beside the
//! weights. PyTorch ignores the metadata, so the file stays a plain state dict.

use crate::data::formats::decode_image;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Registry name (`webdistill models`).
    pub model: String,
    /// Class names, in the order of the logits.
    pub classes: Vec<String>,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Side the images are resized (shorter side) and centre-cropped to.
    pub image_size: usize,
    /// Side of the model's input: the image is zero-padded (before normalisation) up to it.
    pub input_size: usize,
    /// Per-channel normalisation of pixels in [0, 1]: `(v - mean) / std`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The data set it was trained on.
    pub data: String,
    /// How it was trained: `none` (labels only), `kd`, `ofa`, ... and from which teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
}

impl ModelCard {
    /// The safetensors metadata key that holds the card as JSON.
    pub const META_KEY: &'static str = "webdistill.card";

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a card is plain data")
    }

    /// The largest input side a card may ask for (4.5 times the registry's largest, 224).
    pub const MAX_SIDE: usize = 1024;

    pub fn from_json(s: &str, source: &str) -> Result<Self> {
        let card: Self = serde_json::from_str(s).map_err(|e| Error::file(source, format!("not a webdistill model card: {e}")))?;
        card.check().map_err(|msg| Error::file(source, format!("not a usable model card: {msg}")))?;
        Ok(card)
    }

    /// What [`Self::input`] needs of the sizes, checked before anything is allocated from
    /// them: 1 or 3 channels, `1 <= image_size <= input_size <= MAX_SIDE`, a normalisation.
    fn check(&self) -> std::result::Result<(), String> {
        let (c, h, s) = (self.channels, self.image_size, self.input_size);
        if c != 1 && c != 3 {
            return Err(format!("{c} channels (1 or 3)"));
        }
        if h == 0 || h > s || s > Self::MAX_SIDE {
            return Err(format!("image side {h} and input side {s} (need 1 <= image side <= input side <= {})", Self::MAX_SIDE));
        }
        if self.mean.is_empty() || self.std.is_empty() {
            return Err("no normalisation (mean and std need a value per channel)".into());
        }
        Ok(())
    }

    /// The card in a checkpoint's metadata, if it has one.
    pub fn from_metadata(meta: &BTreeMap<String, String>, source: &str) -> Result<Option<Self>> {
        meta.get(Self::META_KEY).map(|s| Self::from_json(s, source)).transpose()
    }

    /// Pixels in [0, 1] (`channels x image_size x image_size`, CHW) -> the model's input,
    /// exactly as training and evaluation feed it: zero-padded to `input_size`, then normalised.
    pub fn input(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        self.check().map_err(|msg| Error::usage(format!("model card: {msg}")))?;
        let (c, h, s) = (self.channels, self.image_size, self.input_size);
        if pixels.len() != c * h * h {
            return Err(Error::BadInput {
                tensor: "image".into(),
                msg: format!("expected {c}x{h}x{h} = {} values, got {}", c * h * h, pixels.len()),
            });
        }
        let pad = (s - h) / 2;
        let mut x = vec![0.0f32; c * s * s];
        for ch in 0..c {
            let (m, sd) = (self.mean[ch.min(self.mean.len() - 1)], self.std[ch.min(self.std.len() - 1)]);
            for yy in 0..s {
                for xx in 0..s {
                    let inside = yy >= pad && yy < pad + h && xx >= pad && xx < pad + h;
                    let v = if inside { pixels[(ch * h + yy - pad) * h + xx - pad] } else { 0.0 };
                    x[(ch * s + yy) * s + xx] = (v - m) / sd;
                }
            }
        }
        Ok(x)
    }

    /// A PNG/JPEG file's bytes -> the model's input (decoded, resized and cropped as an image
    /// folder is, then [`Self::input`]).
    pub fn image_input(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
        self.check().map_err(|msg| Error::usage(format!("model card: {msg}")))?;
        let px = decode_image(bytes, name, self.image_size, self.channels)?;
        self.input(&px.iter().map(|&v| v as f32 / 255.0).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            model: "resnet8".into(),
            classes: vec!["a".into(), "b".into()],
            channels: 3,
            image_size: 4,
            input_size: 6,
            mean: vec![0.5],
            std: vec![0.25],
            data: "folder:x".into(),
            method: None,
            teacher: None,
        }
    }

    #[test]
    fn cards_whose_sizes_would_allocate_without_bound_are_refused() {
        let ok = card();
        assert_eq!(ModelCard::from_json(&ok.to_json(), "card.json").unwrap(), ok);
        assert_eq!(ok.input(&[0.5; 48]).unwrap().len(), 3 * 36);
        // An input side of 100000 would be 3 x 10^10 values (120 GB) for one image.
        for (json, want) in [
            (ModelCard { input_size: 100_000, ..card() }, "input side 100000"),
            (ModelCard { image_size: 0, ..card() }, "image side 0"),
            (ModelCard { image_size: 8, ..card() }, "image side 8 and input side 6"),
            (ModelCard { channels: 1 << 40, ..card() }, "1099511627776 channels"),
            (ModelCard { std: vec![], ..card() }, "no normalisation"),
        ] {
            let e = ModelCard::from_json(&json.to_json(), "card.json").unwrap_err().to_string();
            assert!(e.contains("card.json: not a usable model card") && e.contains(want), "{e}");
            let e = json.input(&[0.5; 48]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(json.image_input(b"not an image", "x.png").unwrap_err().to_string().contains(want));
        }
    }
}
