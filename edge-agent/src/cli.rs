//! The face tools of the `edge-agent` command: `enrol` and `calibrate`. Each returns its
//! output as text (the caller prints it) or an error that names the problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lockerfleet_shared::seal::CabinetPublicKey;
use lockerfleet_shared::{CabinetId, ParcelId};

use crate::vision::calibrate::{self, Calibration};
use crate::vision::imageops::RgbView;
use crate::vision::models::{Assets, ModelFile, ModelSet, sha256_file};
use crate::vision::pipeline::{FacePipeline, QualityPolicy, cosine};

#[derive(Debug, clap::Args)]
pub struct EnrolArgs {
    /// The recipient's photo (JPEG or PNG).
    #[arg(long)]
    pub photo: PathBuf,
    /// The parcel's ready notice as JSON (`GET /api/v1/parcels/{id}/ready-notice`);
    /// or give --cabinet, --cabinet-key, --parcel and --deadline instead.
    #[arg(long, conflicts_with_all = ["cabinet", "cabinet_key", "parcel", "deadline"])]
    pub notice: Option<PathBuf>,
    #[arg(long)]
    pub cabinet: Option<String>,
    /// The cabinet's X25519 public key (base64), as registered.
    #[arg(long)]
    pub cabinet_key: Option<String>,
    #[arg(long)]
    pub parcel: Option<uuid::Uuid>,
    /// The parcel's pickup deadline (RFC 3339).
    #[arg(long)]
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Genuine scores, one per line.
    #[arg(long, requires = "impostor", conflicts_with = "photos")]
    pub genuine: Option<PathBuf>,
    /// Impostor scores, one per line.
    #[arg(long)]
    pub impostor: Option<PathBuf>,
    /// Labelled photos: one sub-folder per person, or files named after the person
    /// (`obama2.jpg` is `obama`). Repeat for several folders.
    #[arg(long)]
    pub photos: Vec<PathBuf>,
    /// Target false-accept rate per attempt.
    #[arg(long, default_value_t = 1e-7)]
    pub target: f64,
    /// Open-template counts to compute thresholds for.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub templates: Vec<usize>,
    /// Classes of the keypad hint that narrows the gallery (100 for two phone digits).
    #[arg(long, default_value_t = 100)]
    pub hint_classes: usize,
    /// Write genuine.txt, impostor.txt and latency.csv here (photos mode).
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The models: the configuration's `[face.models]` if it has them, else the assets that
/// `scripts/face-assets.sh` fetched.
fn models(config: Option<&Path>) -> Result<ModelSet, String> {
    if let Some(path) = config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let partial: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(face) = partial.get("face") {
            let face: crate::config::FaceConfig =
                face.clone().try_into().map_err(|e| format!("{}: [face]: {e}", path.display()))?;
            if let Some(m) = face.models {
                return Ok(m);
            }
        }
    }
    Ok(Assets::locate()?.models())
}

fn load_pipeline(config: Option<&Path>) -> Result<FacePipeline, String> {
    FacePipeline::load(&models(config)?, QualityPolicy::default()).map_err(|e| e.to_string())
}

pub fn enrol(config: Option<&Path>, args: &EnrolArgs) -> Result<String, String> {
    let notice = match &args.notice {
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let v: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or(format!("the notice has no `{k}`"));
            lockerfleet_shared::sdk::ReadyNotice {
                parcel: ParcelId(field("parcel")?.parse().map_err(|e| format!("notice `parcel`: {e}"))?),
                cabinet: CabinetId::new(field("cabinet")?).map_err(|e| format!("notice `cabinet`: {e}"))?,
                cabinet_public_key: CabinetPublicKey::from_base64(&field("cabinet_public_key")?)
                    .map_err(|e| format!("notice `cabinet_public_key`: {e}"))?,
                deadline: field("deadline")?.parse().map_err(|e| format!("notice `deadline`: {e}"))?,
            }
        }
        None => {
            let need = |name: &str| format!("--{name} is needed (or --notice)");
            lockerfleet_shared::sdk::ReadyNotice {
                parcel: ParcelId(args.parcel.ok_or_else(|| need("parcel"))?),
                cabinet: CabinetId::new(args.cabinet.clone().ok_or_else(|| need("cabinet"))?)
                    .map_err(|e| format!("--cabinet: {e}"))?,
                cabinet_public_key: CabinetPublicKey::from_base64(
                    args.cabinet_key.as_deref().ok_or_else(|| need("cabinet-key"))?,
                )
                .map_err(|e| format!("--cabinet-key: {e}"))?,
                deadline: args.deadline.ok_or_else(|| need("deadline"))?,
            }
        }
    };
    let photo = std::fs::read(&args.photo).map_err(|e| format!("cannot read {}: {e}", args.photo.display()))?;
    let mut pipeline = load_pipeline(config)?;
    let template = crate::vision::enrol(&mut pipeline, &photo).map_err(|e| format!("{}: {e}", args.photo.display()))?;
    let sealed =
        lockerfleet_shared::sdk::seal_for_parcel(&notice, &template, &pipeline.models.embedding_ref(), Utc::now())
            .map_err(|e| e.to_string())?;
    serde_json::to_string_pretty(&sealed).map_err(|e| e.to_string())
}

fn read_scores(path: &Path) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            l.trim().parse::<f64>().map_err(|_| format!("{}:{}: {:?} is not a number", path.display(), i + 1, l.trim()))
        })
        .collect()
}

/// The person a photo shows: its folder's name inside a labelled folder, else the
/// letters its file name starts with.
fn label_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    if rel.components().count() > 1 {
        return rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
    }
    let stem = path.file_stem()?.to_string_lossy();
    let label: String = stem.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    (!label.is_empty()).then_some(label)
}

fn photos_in(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| ["jpg", "jpeg", "png"].iter().any(|e| x.eq_ignore_ascii_case(e))) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Per-stage latency of one photo, for the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub photo: String,
    pub detect_ms: f64,
    pub landmarks_ms: f64,
    pub align_ms: f64,
    pub embed_ms: f64,
    pub liveness_ms: f64,
    pub total_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Embeds every usable photo; returns (label, embedding) pairs, the latencies and the
/// photos the quality gate refused.
#[allow(clippy::type_complexity)]
fn embed_photos(
    pipeline: &mut FacePipeline,
    roots: &[PathBuf],
) -> Result<(Vec<(String, Vec<f32>)>, Vec<Latency>, Vec<String>), String> {
    let mut faces = Vec::new();
    let mut latencies = Vec::new();
    let mut refused = Vec::new();
    for root in roots {
        for path in photos_in(root)? {
            let Some(label) = label_of(root, &path) else { continue };
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let Ok(frame) = crate::vision::decode_photo(&bytes) else {
                refused.push(format!("{}: not a readable image", path.display()));
                continue;
            };
            let Some(view) = RgbView::new(frame.width, frame.height, &frame.rgb) else { continue };
            let started = std::time::Instant::now();
            match pipeline.analyse(view) {
                Ok(a) => {
                    let t = std::time::Instant::now();
                    pipeline.liveness(view, a.face).map_err(|e| e.to_string())?;
                    let liveness = t.elapsed();
                    latencies.push(Latency {
                        photo: path.display().to_string(),
                        detect_ms: ms(a.times.detect),
                        landmarks_ms: ms(a.times.landmarks),
                        align_ms: ms(a.times.align),
                        embed_ms: ms(a.times.embed),
                        liveness_ms: ms(liveness),
                        total_ms: ms(started.elapsed()),
                    });
                    faces.push((label, a.embedding.to_vec()));
                }
                Err(e) => refused.push(format!("{}: {e}", path.display())),
            }
        }
    }
    Ok((faces, latencies, refused))
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i]
}

pub fn calibrate(config: Option<&Path>, args: &CalibrateArgs) -> Result<String, String> {
    if !(0.0..1.0).contains(&args.target) || args.target == 0.0 {
        return Err(format!("--target must lie between 0 and 1, not {}", args.target));
    }
    let mut extra = String::new();
    let (genuine, impostor) = match (&args.genuine, &args.impostor) {
        (Some(g), Some(i)) => (read_scores(g)?, read_scores(i)?),
        _ if !args.photos.is_empty() => {
            let mut pipeline = load_pipeline(config)?;
            let (faces, latencies, refused) = embed_photos(&mut pipeline, &args.photos)?;
            let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
            for (i, (la, ea)) in faces.iter().enumerate() {
                for (lb, eb) in &faces[i + 1..] {
                    let s = f64::from(cosine(ea, eb));
                    if la == lb { genuine.push(s) } else { impostor.push(s) }
                }
            }
            let people: BTreeMap<&str, usize> = faces.iter().fold(BTreeMap::new(), |mut m, (l, _)| {
                *m.entry(l.as_str()).or_default() += 1;
                m
            });
            extra.push_str(&format!(
                "photos: {} faces of {} people used, {} refused by the quality gate\n",
                faces.len(),
                people.len(),
                refused.len()
            ));
            for r in &refused {
                extra.push_str(&format!("  refused: {r}\n"));
            }
            type Stage = (&'static str, fn(&Latency) -> f64);
            let stages: [Stage; 6] = [
                ("detect", |l| l.detect_ms),
                ("landmarks", |l| l.landmarks_ms),
                ("align", |l| l.align_ms),
                ("embed", |l| l.embed_ms),
                ("liveness", |l| l.liveness_ms),
                ("total", |l| l.total_ms),
            ];
            extra.push_str("latency per stage, one core (ms):  p50      p99      max\n");
            for (name, f) in stages {
                let mut v: Vec<f64> = latencies.iter().map(f).collect();
                let (p50, p99, max) = (percentile(&mut v, 0.5), percentile(&mut v, 0.99), percentile(&mut v, 1.0));
                extra.push_str(&format!("  {name:<31} {p50:>7.2}  {p99:>7.2}  {max:>7.2}\n"));
            }
            if let Some(dir) = &args.scores_out {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let write = |name: &str, text: String| {
                    std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
                };
                write("genuine.txt", genuine.iter().map(|s| format!("{s}\n")).collect())?;
                write("impostor.txt", impostor.iter().map(|s| format!("{s}\n")).collect())?;
                let mut csv = String::from("photo,detect_ms,landmarks_ms,align_ms,embed_ms,liveness_ms,total_ms\n");
                for l in &latencies {
                    csv.push_str(&format!(
                        "{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}\n",
                        l.photo, l.detect_ms, l.landmarks_ms, l.align_ms, l.embed_ms, l.liveness_ms, l.total_ms
                    ));
                }
                write("latency.csv", csv)?;
            }
            (genuine, impostor)
        }
        _ => return Err("give --genuine and --impostor score files, or --photos".into()),
    };
    if genuine.is_empty() {
        return Err("no genuine scores (each person needs two photos at least)".into());
    }
    let cal = calibrate::calibrate(&genuine, &impostor, args.target, &args.templates, args.hint_classes)
        .ok_or_else(|| format!("{} impostor scores are too few to fit a tail (30 at least)", impostor.len()))?;
    if args.json {
        return serde_json::to_string_pretty(&cal).map_err(|e| e.to_string());
    }
    Ok(format!("{extra}{}", table(&cal, &genuine, &impostor)))
}

fn table(c: &Calibration, genuine: &[f64], impostor: &[f64]) -> String {
    let f = &c.impostor_fit;
    let mut out = format!(
        "genuine pairs {}, lowest score {:.3}; impostor pairs {}, highest score {:.3}\n\
         impostor tail model: normal, mean {:.4} (upper {:.4}), sd {:.4} (upper {:.4})\n\
         target false-accept rate per attempt: {:e}\n\n\
         threshold   FAR seen [95% interval]        FAR modelled   FRR [95% interval]\n",
        c.genuine_pairs,
        c.genuine_min,
        c.impostor_pairs,
        c.impostor_max,
        f.mean,
        f.mean_upper,
        f.sd,
        f.sd_upper,
        c.target_far_per_attempt,
    );
    let candidates: Vec<f64> = (2..=9).map(|i| f64::from(i) / 10.0).collect();
    for p in calibrate::operating_points(genuine, impostor, f, &candidates) {
        out.push_str(&format!(
            "  {:.2}      {:.2e} [{:.1e}, {:.1e}]   {:.1e}        {:.3} [{:.3}, {:.3}]\n",
            p.threshold,
            p.far,
            p.far_interval.0,
            p.far_interval.1,
            p.far_modelled,
            p.frr,
            p.frr_interval.0,
            p.frr_interval.1
        ));
    }
    for (title, rows) in [
        ("\nthresholds for the target".to_owned(), &c.rows),
        (format!("\nwith a keypad hint of {} classes narrowing the gallery", c.hint_classes), &c.rows_with_hint),
    ] {
        out.push_str(&format!(
            "{title}\n  templates  per-comparison FAR  threshold (fit)  threshold (upper bound, use)  FRR [95% interval]\n"
        ));
        for r in rows {
            out.push_str(&format!(
                "  {:>9}  {:>18.2e}  {:>15.4}  {:>28.4}  {:.3} [{:.3}, {:.3}]\n",
                r.templates,
                r.per_comparison_far,
                r.threshold_fit,
                r.threshold,
                r.frr,
                r.frr_interval.0,
                r.frr_interval.1
            ));
        }
    }
    out
}

#[derive(Debug, clap::Args)]
pub struct BenchDecisionArgs {
    /// The recipient's enrolment photo.
    #[arg(long)]
    pub enrol: PathBuf,
    /// The photo shown at the cabinet (made into a live capture with depth and IR).
    #[arg(long)]
    pub probe: PathBuf,
    /// Open templates at the cabinet (the recipient's and others).
    #[arg(long, default_value_t = 50)]
    pub templates: usize,
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Another embedding model in place of the configured one (e.g. the MobileFaceNet-sized
    /// model of `scripts/gen-mobilefacenet.py`), checked against the embedding contract and
    /// taken at the sha256 it has. The other models stay. A model with random weights gives
    /// meaningless scores: then only the latency means something.
    #[arg(long)]
    pub embedding: Option<PathBuf>,
}

/// Frame in → decision, as the cabinet's matcher does it: quality gate, attack gate with
/// the RGB model, depth and IR, opening every sealed template, 1:N match.
pub fn bench_decision(config: Option<&Path>, args: &BenchDecisionArgs) -> Result<String, String> {
    use crate::face::{Candidate, FaceDecision, FaceMatcher};
    use lockerfleet_shared::envelope::{ExpectedParcel, ParcelStage};
    use lockerfleet_shared::seal::{CabinetKeyPair, TemplateBinding};
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut models = models(config)?;
    if let Some(path) = &args.embedding {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        models.embedding = ModelFile { path: path.clone(), sha256: sha256_file(path).map_err(|e| e.to_string())? };
        models.embedding_id = format!("bench-{stem}");
    }
    let mut pipeline = FacePipeline::load(&models, QualityPolicy::default()).map_err(|e| e.to_string())?;
    let template = crate::vision::enrol(&mut pipeline, &read(&args.enrol)?)?;
    // The gallery's other templates have the length this model gives (read from the
    // model, not assumed).
    let dim = template.values().len();
    let probe = crate::vision::decode_photo(&read(&args.probe)?)?;
    let view = RgbView::new(probe.width, probe.height, &probe.rgb).ok_or("empty probe")?;
    let a = pipeline.analyse(view).map_err(|e| e.to_string())?;
    let live = crate::vision::synth::live(&probe, &crate::vision::synth::Placement { face: a.face, points: a.points });
    let keys = CabinetKeyPair::generate();
    let cabinet = CabinetId::new("bench").map_err(|e| e.to_string())?;
    let other_template = |i: usize| {
        // Other recipients: fixed pseudo-random unit vectors (impostors to the probe).
        let v: Vec<f32> = (0..dim).map(|j| (((i * 7919 + j * 104_729) % 1000) as f32 / 500.0) - 1.0).collect();
        lockerfleet_shared::seal::FaceTemplate::new(crate::vision::pipeline::normalise(&v).to_vec())
    };
    let mut candidates = Vec::with_capacity(args.templates);
    for i in 0..args.templates.max(1) {
        let parcel = ParcelId::generate();
        let t = if i == 0 {
            lockerfleet_shared::seal::FaceTemplate::new(template.values().to_vec())
        } else {
            other_template(i)
        };
        let binding = TemplateBinding {
            cabinet: cabinet.clone(),
            parcel,
            expires_at: Utc::now() + chrono::Duration::hours(48),
            model: models.embedding_ref(),
        };
        candidates.push(Candidate {
            parcel: ExpectedParcel {
                parcel,
                compartment: lockerfleet_shared::CompartmentId::new("A1").map_err(|e| e.to_string())?,
                stage: ParcelStage::Ready,
                courier: None,
                code_hash: None,
                expires_at: Utc::now() + chrono::Duration::hours(24),
            },
            template: lockerfleet_shared::seal::seal(&keys.public(), binding, &t).map_err(|e| e.to_string())?,
        });
    }
    let mut matcher = crate::vision::OnnxMatcher::new(
        FacePipeline::load(&models, QualityPolicy::default()).map_err(|e| e.to_string())?,
        keys,
        cabinet,
        crate::vision::pad::PadPolicy::default(),
        crate::vision::matching::MatchPolicy::default(),
    )?;
    let mut times = Vec::with_capacity(args.runs);
    let mut matched = 0;
    for _ in 0..args.runs.max(1) {
        let t = std::time::Instant::now();
        let d = matcher.decide(std::slice::from_ref(&live), &candidates, Utc::now());
        times.push(ms(t.elapsed()));
        if matches!(d, FaceDecision::Match { .. }) {
            matched += 1;
        }
    }
    let (p50, p99, max) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99), percentile(&mut times, 1.0));
    let outcome = if args.embedding.is_some() {
        format!("matched {matched}/{} (swapped-in embedding model: the match outcome is not meaningful)", times.len())
    } else {
        format!("matched {matched}/{}", times.len())
    };
    Ok(format!(
        "frame {}x{} → decision with {} open templates, embedding {} ({dim}-d), {} runs: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; {outcome}",
        probe.width,
        probe.height,
        candidates.len(),
        models.embedding_id,
        times.len(),
    ))
}
