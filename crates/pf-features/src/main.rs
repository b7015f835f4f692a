use anyhow::Context;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_featurize::{Feature, FeatureList, RecordView};
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log | pf-features | pf-score
  pf-features --features my-features.json records.jsonl
  pf-features --list

Adds a `features` object to every record (replacing an earlier one), with
the features of the list in its order. Categorical features are strings;
the model encodes them. A feature the record cannot give (e.g. no `ts`)
is null, and pf-score reports such records instead of guessing.
Lines that are not JSON objects are reported on stderr with their line
number and skipped.

Exit status: 0 on success, 1 if an input could not be read or a line was
not a record, 2 on bad usage or configuration.";

/// Add feature vectors to pf records.
#[derive(Parser, Debug)]
#[command(name = "pf-features", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// JSON array of feature names [default: paths.features from the config,
    /// else the six features of the old system].
    #[arg(long, value_name = "FILE")]
    features: Option<PathBuf>,
    /// Print the features that can be computed, and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-features", || {
        if args.list {
            for f in Feature::ALL {
                println!("{:<16} {}", f.name(), f.description());
            }
            return Ok(EXIT_OK);
        }
        let config = args.common.load_config().map_err(Fatal::usage)?;
        let list = match &args.features {
            Some(path) => FeatureList::load(path),
            None if config.paths.features.is_file() => FeatureList::load(&config.paths.features),
            None => Ok(FeatureList::default_set()),
        }
        .context("choosing the features")
        .map_err(Fatal::usage)?;

        let mut out = Output::default();
        let mut errors = LineErrors::new("pf-features");
        let mut value = Vec::with_capacity(256);
        let stats = pf_cli::for_each_record(
            "pf-features",
            &args.common.files,
            &mut out,
            &mut errors,
            |text, number, origin, buf, errors| {
                let view: RecordView = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(e) => {
                        return errors.report(
                            origin,
                            number,
                            format_args!("not a JSON record: {e}"),
                        )
                    }
                };
                let replace = view.features.is_some();
                value.clear();
                list.write_features(&view, &mut value);
                if let Err(e) =
                    pf_record::json::write_with_field(buf, text, "features", &value, replace)
                {
                    errors.report(origin, number, e);
                }
            },
        )?;
        errors.summary("skipped (not records)");
        Ok(if stats.unreadable > 0 || errors.count > 0 {
            EXIT_INPUT
        } else {
            EXIT_OK
        })
    })
}
