//! EDM's augmentation pipeline (Karras et al. 2022, `training/augment.py`,
//! after StyleGAN2-ADA): random flips, integer rotations and translations,
//! and geometric transforms (isotropic and anisotropic scaling, fractional
//! rotation and translation) executed by resampling through a wavelet
//! filter. Each augmentation is applied with probability `p × multiplier`,
//! and the parameters drawn become the augmentation labels a network is
//! conditioned on (EDM's `augment_dim`), so it can learn to undo them.
//!
//! Draws follow the reference's order and shapes exactly, so the same seed
//! gives the same augmentations as EDM (`tests/fixtures/augment/` holds
//! EDM's outputs). EDM's colour transforms are not offered (no EDM or
//! Diff-Instruct configuration uses them).

use std::f64::consts::PI;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::shard::batch_draw;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The `sym6` wavelet's low-pass filter, EDM's resampling filter (rounded to
/// float32 where used, as EDM does).
const SYM6: [f64; 12] = [
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
];

/// The pipeline's settings, EDM's names and defaults (every augmentation off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentPipe {
    /// Overall probability multiplier.
    pub p: f64,
    /// Probability multiplier for an x-flip.
    pub xflip: f64,
    /// Probability multiplier for a y-flip.
    pub yflip: f64,
    /// Probability multiplier for a rotation by a multiple of 90° (square images).
    pub rotate_int: f64,
    /// Probability multiplier for an integer translation (with reflection).
    pub translate_int: f64,
    /// Range of the integer translation, relative to the image size.
    pub translate_int_max: f64,
    /// Probability multiplier for isotropic scaling.
    pub scale: f64,
    /// Probability multiplier for a fractional rotation.
    pub rotate_frac: f64,
    /// Probability multiplier for anisotropic scaling.
    pub aniso: f64,
    /// Probability multiplier for a fractional translation.
    pub translate_frac: f64,
    /// Log2 standard deviation of isotropic scaling.
    pub scale_std: f64,
    /// Range of the fractional rotation (1 = the full circle).
    pub rotate_frac_max: f64,
    /// Log2 standard deviation of anisotropic scaling.
    pub aniso_std: f64,
    /// Probability of scaling anisotropically in a rotated frame.
    pub aniso_rotate_prob: f64,
    /// Standard deviation of the fractional translation, relative to the image size.
    pub translate_frac_std: f64,
}

impl Default for AugmentPipe {
    fn default() -> Self {
        AugmentPipe {
            p: 1.0,
            xflip: 0.0,
            yflip: 0.0,
            rotate_int: 0.0,
            translate_int: 0.0,
            translate_int_max: 0.125,
            scale: 0.0,
            rotate_frac: 0.0,
            aniso: 0.0,
            translate_frac: 0.0,
            scale_std: 0.2,
            rotate_frac_max: 1.0,
            aniso_std: 0.2,
            aniso_rotate_prob: 0.5,
            translate_frac_std: 0.125,
        }
    }
}

/// An entry of a batch of 3×3 matrices: a constant or one value per sample.
enum Entry<'a> {
    C(f64),
    T(&'a Tensor),
}

/// `[N, 3, 3]` matrices from their entries (constants broadcast to all samples).
fn matrices(rows: [[Entry<'_>; 3]; 3], n: i64, device: Device) -> Result<Tensor> {
    let mut elements = Vec::with_capacity(9);
    for row in &rows {
        for entry in row {
            elements.push(match entry {
                Entry::C(value) => Tensor::f_full([n], *value, (Kind::Float, device)).ctx("augment matrix")?,
                Entry::T(tensor) => tensor.f_reshape([n]).ctx("augment matrix")?,
            });
        }
    }
    Tensor::f_stack(&elements, -1).ctx("augment matrix")?.f_reshape([n, 3, 3]).ctx("augment matrix")
}

fn translate(tx: Entry<'_>, ty: Entry<'_>, n: i64, device: Device) -> Result<Tensor> {
    use Entry::C;
    matrices([[C(1.0), C(0.0), tx], [C(0.0), C(1.0), ty], [C(0.0), C(0.0), C(1.0)]], n, device)
}

fn scale(sx: Entry<'_>, sy: Entry<'_>, n: i64, device: Device) -> Result<Tensor> {
    use Entry::C;
    matrices([[sx, C(0.0), C(0.0)], [C(0.0), sy, C(0.0)], [C(0.0), C(0.0), C(1.0)]], n, device)
}

/// EDM's `rotate2d(θ)`: `[[cos θ, sin(−θ)], [sin θ, cos θ]]`.
fn rotate(theta: &Tensor, n: i64, device: Device) -> Result<Tensor> {
    use Entry::{C, T};
    let (cos, sin) = (theta.f_cos().ctx("rotate")?, theta.f_sin().ctx("rotate")?);
    let sin_neg = theta.f_neg().ctx("rotate")?.f_sin().ctx("rotate")?;
    matrices([[T(&cos), T(&sin_neg), C(0.0)], [T(&sin), T(&cos), C(0.0)], [C(0.0), C(0.0), C(1.0)]], n, device)
}

/// `where(cond, a, b)` elementwise.
fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.f_where_self(cond, b).ctx("augment")
}

/// `make(shape)` for the global batch when data-parallel, of which this rank
/// keeps its rows along `batch_dim` (see [`difi_core::shard`]).
fn draw(shape: &[i64], batch_dim: usize, make: impl FnOnce(&[i64]) -> Result<Tensor>) -> Result<Tensor> {
    batch_draw(shape[batch_dim], batch_dim as i64, |global| {
        let mut shape = shape.to_vec();
        shape[batch_dim] = global;
        make(&shape)
    })
}

/// A uniform draw in [0, 1) of `shape`, batch along `batch_dim`.
fn rand(shape: &[i64], batch_dim: usize, device: Device) -> Result<Tensor> {
    draw(shape, batch_dim, |shape| Tensor::f_rand(shape, (Kind::Float, device)).ctx("augment"))
}

/// A standard normal draw of `shape`, batch along `batch_dim`.
fn randn(shape: &[i64], batch_dim: usize, device: Device) -> Result<Tensor> {
    draw(shape, batch_dim, |shape| Tensor::f_randn(shape, (Kind::Float, device)).ctx("augment"))
}

/// Integers in `0..high` of `shape` `[n, …]`.
fn randint(high: i64, shape: &[i64], device: Device) -> Result<Tensor> {
    draw(shape, 0, |shape| Tensor::f_randint(high, shape, (Kind::Int64, device)).ctx("augment"))
}

/// Keeps `w` where a uniform draw of `shape` (batch along `batch_dim`) falls
/// below `probability`, else 0.
fn with_probability(w: &Tensor, shape: &[i64], batch_dim: usize, probability: f64, device: Device) -> Result<Tensor> {
    let draw = rand(shape, batch_dim, device)?;
    select(&draw.f_lt(probability).ctx("augment")?, w, &w.f_zeros_like().ctx("augment")?)
}

impl AugmentPipe {
    /// EDM's CIFAR-10 setting, which Diff-Instruct's reference uses for its
    /// fake score: x-flips always possible, y-flips, scaling, rotation,
    /// anisotropy and translation, at overall probability `p`.
    pub fn edm(p: f64) -> Self {
        AugmentPipe {
            p,
            xflip: 1e8,
            yflip: 1.0,
            scale: 1.0,
            rotate_frac: 1.0,
            aniso: 1.0,
            translate_frac: 1.0,
            ..Default::default()
        }
    }

    /// Number of augmentation labels this pipe produces: the `augment_dim`
    /// a network must have to take them.
    pub fn label_dim(&self) -> i64 {
        let on = |m: f64| m > 0.0;
        [
            (self.xflip, 1),
            (self.yflip, 1),
            (self.rotate_int, 2),
            (self.translate_int, 2),
            (self.scale, 1),
            (self.rotate_frac, 2),
            (self.aniso, 2),
            (self.translate_frac, 2),
        ]
        .iter()
        .filter(|(m, _)| on(*m))
        .map(|(_, dims)| dims)
        .sum()
    }

    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("p", self.p),
            ("xflip", self.xflip),
            ("yflip", self.yflip),
            ("rotate_int", self.rotate_int),
            ("translate_int", self.translate_int),
            ("translate_int_max", self.translate_int_max),
            ("scale", self.scale),
            ("rotate_frac", self.rotate_frac),
            ("aniso", self.aniso),
            ("translate_frac", self.translate_frac),
            ("scale_std", self.scale_std),
            ("rotate_frac_max", self.rotate_frac_max),
            ("aniso_std", self.aniso_std),
            ("aniso_rotate_prob", self.aniso_rotate_prob),
            ("translate_frac_std", self.translate_frac_std),
        ];
        for (key, value) in fields {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(Error::config(key, format!("must be a finite number ≥ 0, got {value}")));
            }
        }
        Ok(())
    }

    /// Augments images `[N, C, H, W]` (C = 1 or 3, float); returns the
    /// augmented images and their labels `[N, label_dim]` (float32).
    pub fn apply(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let size = images.size();
        let [n, c, h, w] = size[..] else {
            return Err(Error::Shape {
                what: "images to augment".into(),
                expected: vec![-1, -1, -1, -1],
                actual: size,
            });
        };
        let device = images.device();
        let options = (Kind::Float, device);
        let mut images = images.shallow_clone();
        let mut labels: Vec<Tensor> = Vec::new();

        // Pixel blitting.
        for (multiplier, dim) in [(self.xflip, 3), (self.yflip, 2)] {
            if multiplier > 0.0 {
                let flip = randint(2, &[n, 1, 1, 1], device)?;
                let flip = with_probability(&flip, &[n, 1, 1, 1], 0, multiplier * self.p, device)?;
                images = select(&flip.f_eq(1).ctx("augment")?, &images.f_flip([dim]).ctx("flip")?, &images)?;
                labels.push(flip);
            }
        }
        if self.rotate_int > 0.0 {
            if h != w {
                return Err(Error::config("rotate_int", format!("needs square images, got {h}×{w}")));
            }
            let turns = randint(4, &[n, 1, 1, 1], device)?;
            let turns = with_probability(&turns, &[n, 1, 1, 1], 0, self.rotate_int * self.p, device)?;
            let is = |k: i64| turns.f_eq(k).ctx("augment");
            let flip_x = is(1)?.f_logical_or(&is(2)?).ctx("augment")?;
            let flip_y = is(2)?.f_logical_or(&is(3)?).ctx("augment")?;
            let transpose = is(1)?.f_logical_or(&is(3)?).ctx("augment")?;
            images = select(&flip_x, &images.f_flip([3]).ctx("flip")?, &images)?;
            images = select(&flip_y, &images.f_flip([2]).ctx("flip")?, &images)?;
            images = select(&transpose, &images.f_transpose(2, 3).ctx("transpose")?, &images)?;
            labels.push(flip_x);
            labels.push(flip_y);
        }
        if self.translate_int > 0.0 {
            let shift = rand(&[2, n, 1, 1, 1], 1, device)? * 2.0 - 1.0;
            let shift = with_probability(&shift, &[1, n, 1, 1, 1], 1, self.translate_int * self.p, device)?;
            let (wx, hy) = (w as f64 * self.translate_int_max, h as f64 * self.translate_int_max);
            let tx = (shift.get(0) * wx).f_round().ctx("augment")?.f_to_kind(Kind::Int64).ctx("augment")?;
            let ty = (shift.get(1) * hy).f_round().ctx("augment")?.f_to_kind(Kind::Int64).ctx("augment")?;
            images = translate_with_reflection(&images, &tx, &ty)?;
            labels.push(tx.f_to_kind(Kind::Float).ctx("augment")? / wx);
            labels.push(ty.f_to_kind(Kind::Float).ctx("augment")? / hy);
        }

        // Parameters of the geometric transformation (its inverse, G⁻¹).
        let mut g_inv: Option<Tensor> = None;
        let mut then = |m: Tensor| -> Result<()> {
            g_inv = Some(match g_inv.take() {
                Some(g) => g.f_matmul(&m).ctx("augment")?,
                None => m,
            });
            Ok(())
        };
        if self.scale > 0.0 {
            let amount = randn(&[n], 0, device)?;
            let amount = with_probability(&amount, &[n], 0, self.scale * self.p, device)?;
            let s = (&amount * self.scale_std).f_exp2().ctx("augment")?;
            let inv = s.f_reciprocal().ctx("augment")?;
            then(scale(Entry::T(&inv), Entry::T(&inv), n, device)?)?;
            labels.push(amount);
        }
        if self.rotate_frac > 0.0 {
            let angle = (rand(&[n], 0, device)? * 2.0 - 1.0) * (PI * self.rotate_frac_max);
            let angle = with_probability(&angle, &[n], 0, self.rotate_frac * self.p, device)?;
            // EDM's rotate2d_inv(−w) is rotate2d(w).
            then(rotate(&angle, n, device)?)?;
            labels.push(angle.f_cos().ctx("augment")? - 1.0);
            labels.push(angle.f_sin().ctx("augment")?);
        }
        if self.aniso > 0.0 {
            let amount = randn(&[n], 0, device)?;
            let frame = (rand(&[n], 0, device)? * 2.0 - 1.0) * PI;
            let amount = with_probability(&amount, &[n], 0, self.aniso * self.p, device)?;
            let frame = with_probability(&frame, &[n], 0, self.aniso_rotate_prob, device)?;
            let s = (&amount * self.aniso_std).f_exp2().ctx("augment")?;
            // EDM's scale2d_inv(s, 1/s) divides twice: 1/s, and 1/(1/s).
            let inv_s = s.f_reciprocal().ctx("augment")?;
            let inv_inv_s = inv_s.f_reciprocal().ctx("augment")?;
            // rotate2d_inv(r) @ scale2d_inv(s, 1/s) @ rotate2d_inv(−r), in EDM's order.
            then(rotate(&frame.f_neg().ctx("augment")?, n, device)?)?;
            then(scale(Entry::T(&inv_s), Entry::T(&inv_inv_s), n, device)?)?;
            then(rotate(&frame, n, device)?)?;
            labels.push(&amount * frame.f_cos().ctx("augment")?);
            labels.push(&amount * frame.f_sin().ctx("augment")?);
        }
        if self.translate_frac > 0.0 {
            let shift = randn(&[2, n], 1, device)?;
            let shift = with_probability(&shift, &[1, n], 1, self.translate_frac * self.p, device)?;
            let tx = shift.get(0) * (w as f64 * self.translate_frac_std);
            let ty = shift.get(1) * (h as f64 * self.translate_frac_std);
            then(translate(Entry::T(&tx.f_neg().ctx("augment")?), Entry::T(&ty.f_neg().ctx("augment")?), n, device)?)?;
            labels.push(shift.get(0));
            labels.push(shift.get(1));
        }
        if let Some(g_inv) = g_inv {
            images = transform_geometrically(&images, &g_inv, [n, c, h, w])?;
        }

        let labels = if labels.is_empty() {
            Tensor::f_zeros([n, 0], options).ctx("augment labels")?
        } else {
            let flat = labels
                .iter()
                .map(|l| l.f_to_kind(Kind::Float)?.f_reshape([n, -1]))
                .collect::<std::result::Result<Vec<_>, _>>()
                .ctx("augment labels")?;
            Tensor::f_cat(&flat, 1).ctx("augment labels")?
        };
        Ok((images, labels))
    }
}

/// EDM's integer translation: pixel `(x, y)` takes `(x − tx, y + ty)`,
/// reflected at the borders. `tx`, `ty`: int64 `[N, 1, 1, 1]`.
fn translate_with_reflection(images: &Tensor, tx: &Tensor, ty: &Tensor) -> Result<Tensor> {
    let size = images.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    let device = images.device();
    let range = |len: i64, shape: [i64; 4]| -> Result<Tensor> {
        Tensor::f_arange(len, (Kind::Int64, device)).ctx("translate")?.f_reshape(shape).ctx("translate")
    };
    let b = range(n, [n, 1, 1, 1])?;
    let ch = range(c, [1, c, 1, 1])?;
    let y = range(h, [1, 1, h, 1])?;
    let x = range(w, [1, 1, 1, w])?;
    let reflect = |coord: Tensor, len: i64| -> Result<Tensor> {
        let folded = coord.f_remainder(len * 2 - 2).ctx("translate")?;
        Ok((folded.f_neg().ctx("translate")? + (len - 1)).f_abs().ctx("translate")?.f_neg().ctx("translate")?
            + (len - 1))
    };
    let x = reflect(x - tx, w)?;
    let y = reflect(y + ty, h)?;
    let index = ((b * c + ch) * h + y) * w + x;
    images.f_flatten(0, -1).ctx("translate")?.f_take(&index).ctx("translate")
}

/// Applies `g_inv` `[N, 3, 3]` (output pixel → input pixel, centred
/// coordinates) to images `[N, C, H, W]`: reflect-pad as far as the
/// transformed corners reach, upsample 2× through the sym6 filter, sample
/// bilinearly, filter and downsample back, crop.
fn transform_geometrically(images: &Tensor, g_inv: &Tensor, [n, c, h, w]: [i64; 4]) -> Result<Tensor> {
    use Entry::C;
    let device = images.device();
    let kind = images.kind();
    let (cx, cy) = ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0);
    let hz_pad = (SYM6.len() / 4) as i64;

    // The corners, transformed, decide how much border the sampling can reach.
    let corners = Tensor::from_slice(&[-cx, -cy, 1.0, cx, -cy, 1.0, cx, cy, 1.0, -cx, cy, 1.0])
        .f_to_kind(Kind::Float)
        .ctx("augment")?
        .f_to_device(device)
        .ctx("augment")?
        .f_reshape([4, 3])
        .ctx("augment")?;
    let corners = g_inv.f_matmul(&corners.f_transpose(0, 1).ctx("augment")?).ctx("augment")?; // [N, 3, 4]
    let xy = corners
        .f_narrow(1, 0, 2)
        .ctx("augment")?
        .f_permute([1, 0, 2])
        .ctx("augment")?
        .f_flatten(1, -1)
        .ctx("augment")?;
    let reach =
        Tensor::f_cat(&[xy.f_neg().ctx("augment")?, xy], 0).ctx("augment")?.f_amax([1], false).ctx("augment")?;
    let offset = Tensor::from_slice(&[
        (hz_pad * 2) as f64 - cx,
        (hz_pad * 2) as f64 - cy,
        (hz_pad * 2) as f64 - cx,
        (hz_pad * 2) as f64 - cy,
    ])
    .f_to_kind(Kind::Float)
    .ctx("augment")?
    .f_to_device(device)
    .ctx("augment")?;
    let limit = Tensor::from_slice(&[(w - 1) as f32, (h - 1) as f32, (w - 1) as f32, (h - 1) as f32])
        .f_to_device(device)
        .ctx("augment")?;
    let margin = (reach + offset)
        .f_clamp_min(0.0)
        .ctx("augment")?
        .f_minimum(&limit)
        .ctx("augment")?
        .f_ceil()
        .ctx("augment")?
        .f_to_kind(Kind::Int)
        .ctx("augment")?;
    let margin: Vec<i32> = Vec::try_from(margin.f_to_device(Device::Cpu).ctx("augment")?).ctx("augment")?;
    let (mx0, my0, mx1, my1) = (margin[0] as i64, margin[1] as i64, margin[2] as i64, margin[3] as i64);

    let images = images.f_pad([mx0, mx1, my0, my1], "reflect", None).ctx("augment pad")?;
    let shift = |x: f64, y: f64| translate(C(x), C(y), n, device);
    let g_inv = shift((mx0 - mx1) as f64 / 2.0, (my0 - my1) as f64 / 2.0)?.f_matmul(g_inv).ctx("augment")?;

    // Upsample 2×: zeros between pixels, then the reversed filter along x and y.
    let filter = Tensor::from_slice(&SYM6).f_to_kind(kind).ctx("augment")?.f_to_device(device).ctx("augment")?;
    let reversed =
        filter.f_flip([0]).ctx("augment")?.f_reshape([1, 1, -1]).ctx("augment")?.f_tile([c, 1, 1]).ctx("augment")?;
    let taps = SYM6.len() as i64;
    let up_pad = (taps + 1) / 2;
    let (ph, pw) = (images.size()[2], images.size()[3]);
    let images = Tensor::f_stack(&[&images, &images.f_zeros_like().ctx("augment")?], 4)
        .ctx("augment")?
        .f_reshape([n, c, ph, 2 * pw])
        .ctx("augment")?
        .f_narrow(3, 0, 2 * pw - 1)
        .ctx("augment")?;
    let images = images
        .f_conv2d(&reversed.f_unsqueeze(2).ctx("augment")?, None::<&Tensor>, [1, 1], [0, up_pad], [1, 1], c)
        .ctx("augment upsample")?;
    let uw = images.size()[3];
    let images = Tensor::f_stack(&[&images, &images.f_zeros_like().ctx("augment")?], 3)
        .ctx("augment")?
        .f_reshape([n, c, 2 * ph, uw])
        .ctx("augment")?
        .f_narrow(2, 0, 2 * ph - 1)
        .ctx("augment")?;
    let images = images
        .f_conv2d(&reversed.f_unsqueeze(3).ctx("augment")?, None::<&Tensor>, [1, 1], [up_pad, 0], [1, 1], c)
        .ctx("augment upsample")?;
    let g_inv = scale(C(2.0), C(2.0), n, device)?
        .f_matmul(&g_inv)
        .ctx("augment")?
        .f_matmul(&scale(C(0.5), C(0.5), n, device)?)
        .ctx("augment")?;
    let g_inv = shift(-0.5, -0.5)?.f_matmul(&g_inv).ctx("augment")?.f_matmul(&shift(0.5, 0.5)?).ctx("augment")?;

    // Sample the transformed image at twice the padded size.
    let out = [n, c, (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2];
    let (ih, iw) = (images.size()[2] as f64, images.size()[3] as f64);
    let g_inv = scale(C(2.0 / iw), C(2.0 / ih), n, device)?
        .f_matmul(&g_inv)
        .ctx("augment")?
        .f_matmul(&scale(C(1.0 / (2.0 / out[3] as f64)), C(1.0 / (2.0 / out[2] as f64)), n, device)?)
        .ctx("augment")?;
    let theta = g_inv.f_narrow(1, 0, 2).ctx("augment")?;
    let grid = Tensor::f_affine_grid_generator(&theta, out, false).ctx("augment grid")?;
    let images = images.f_grid_sampler(&grid, 0, 0, false).ctx("augment sample")?;

    // Filter, downsample 2× and crop back to the input size.
    let forward = filter.f_reshape([1, 1, -1]).ctx("augment")?.f_tile([c, 1, 1]).ctx("augment")?;
    let down_pad = (taps - 1) / 2;
    let images = images
        .f_conv2d(&forward.f_unsqueeze(2).ctx("augment")?, None::<&Tensor>, [1, 2], [0, down_pad], [1, 1], c)
        .ctx("augment downsample")?;
    let images = images.f_narrow(3, hz_pad, images.size()[3] - 2 * hz_pad).ctx("augment")?;
    let images = images
        .f_conv2d(&forward.f_unsqueeze(3).ctx("augment")?, None::<&Tensor>, [2, 1], [down_pad, 0], [1, 1], c)
        .ctx("augment downsample")?;
    images.f_narrow(2, hz_pad, images.size()[2] - 2 * hz_pad).ctx("augment")
}
