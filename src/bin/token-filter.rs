//! `token-filter check FILE...`, `token-filter schema`, `token-filter explain FILE`: the
//! filter's own configuration validation, before a configuration reaches a gateway (see
//! `src/cli.rs`). Built with `--features cli`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = envoy_token_filter::cli::run(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
