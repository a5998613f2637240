//! curl command lines, as curl Jobs run them (`curl -s -o /dev/null -w '%{http_code}' http://api.app/`).
//! The request goes through [`super::handle`] from the Job's pod; output and exit codes are curl's.
//!
//! Supported subset (anything else: exit 2 "option X: is unknown", as curl says):
//! `-s/--silent`, `-S/--show-error`, `-o/--output <file>` (the body is discarded: meshsim writes no
//! files), `-w/--write-out <fmt>` (`%{http_code}`, `%{response_code}`, `%{exitcode}`, `%{method}`,
//! `%{url_effective}`, `%{size_download}`, `%{content_type}`, `%{time_total}`; `\n`, `\t`, `\r`,
//! `\\`, `%%`), `-X/--request`, `-H/--header`, `-I/--head`, `-i/--include`, `-f/--fail`,
//! `-d/--data/--data-raw/--data-binary` (POST unless `-X`), `-m/--max-time`, `--connect-timeout`,
//! and, ignored: `-v/--verbose`, `-L/--location`, `-k/--insecure`, `--retry`, `--retry-delay`,
//! `--retry-max-time`, `--retry-connrefused`, `--resolve`, `--http1.1`, `--no-progress-meter`.
//! Short flags combine (`-sSf`, `-so /dev/null`, `-w%{http_code}`). A leading `curl` is skipped.
//! Exit codes: 0, 2 (usage), 6 (DNS), 7 (refused), 22 (`-f` and status >= 400), 28 (timeout; the model
//! has no hanging outcome, so never produced today), 56 (reset).

use super::{Outcome, Request, Source};
use crate::Sim;

/// What curl printed and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Default)]
struct Opts {
    silent: bool,
    show_error: bool,
    output: Option<String>,
    write_out: Option<String>,
    method: Option<String>,
    headers: Vec<(String, String)>,
    head: bool,
    include: bool,
    fail: bool,
    data: Option<String>,
    urls: Vec<String>,
}

fn usage(msg: String) -> CurlOutput {
    CurlOutput {
        exit_code: 2,
        stdout: String::new(),
        stderr: format!("{msg}\ncurl: try 'curl --help' or 'curl --manual' for more information\n"),
    }
}

/// Long options taking a value, and whether they matter to the model.
const LONG_WITH_ARG: &[&str] = &[
    "--output",
    "--write-out",
    "--request",
    "--header",
    "--max-time",
    "--connect-timeout",
    "--data",
    "--data-raw",
    "--data-binary",
    "--retry",
    "--retry-delay",
    "--retry-max-time",
    "--resolve",
    "--url",
    "--user-agent",
];
const LONG_FLAGS: &[&str] = &[
    "--silent",
    "--show-error",
    "--fail",
    "--head",
    "--include",
    "--verbose",
    "--location",
    "--insecure",
    "--retry-connrefused",
    "--http1.1",
    "--no-progress-meter",
];

fn apply(o: &mut Opts, name: &str, val: Option<String>) -> Result<(), CurlOutput> {
    let v = || val.clone().unwrap_or_default();
    match name {
        "s" | "--silent" => o.silent = true,
        "S" | "--show-error" => o.show_error = true,
        "f" | "--fail" => o.fail = true,
        "I" | "--head" => o.head = true,
        "i" | "--include" => o.include = true,
        "v"
        | "--verbose"
        | "L"
        | "--location"
        | "k"
        | "--insecure"
        | "--retry-connrefused"
        | "--http1.1"
        | "--no-progress-meter" => {}
        "o" | "--output" => o.output = Some(v()),
        "w" | "--write-out" => o.write_out = Some(v()),
        "X" | "--request" => o.method = Some(v()),
        "H" | "--header" => {
            let h = v();
            // curl ignores a header without a colon
            if let Some((k, val)) = h.split_once(':') {
                o.headers.push((k.trim().to_string(), val.trim().to_string()));
            }
        }
        "A" | "--user-agent" => o.headers.push(("User-Agent".into(), v())),
        "d" | "--data" | "--data-raw" | "--data-binary" => o.data = Some(v()),
        "m" | "--max-time" | "--connect-timeout" => {
            if v().parse::<f64>().is_err() {
                return Err(usage(format!(
                    "curl: option {}: expected a proper numerical parameter",
                    dash(name)
                )));
            }
        }
        "--retry" | "--retry-delay" | "--retry-max-time" | "--resolve" => {}
        "--url" => o.urls.push(v()),
        _ => return Err(usage(format!("curl: option {}: is unknown", dash(name)))),
    }
    Ok(())
}

fn dash(name: &str) -> String {
    if name.starts_with("--") {
        name.to_string()
    } else {
        format!("-{name}")
    }
}

const SHORT_WITH_ARG: &str = "owXHmdA";
const SHORT_FLAGS: &str = "sSfIivLk";

fn parse(argv: &[String]) -> Result<Opts, CurlOutput> {
    let mut args = argv.iter().peekable();
    if let Some(first) = args.peek()
        && (first.as_str() == "curl" || first.ends_with("/curl"))
    {
        args.next();
    }
    let mut o = Opts::default();
    while let Some(a) = args.next() {
        if a.starts_with("--") && a.len() > 2 {
            let name = a.as_str();
            if LONG_WITH_ARG.contains(&name) {
                let Some(v) = args.next() else {
                    return Err(usage(format!("curl: option {name}: requires parameter")));
                };
                apply(&mut o, name, Some(v.clone()))?;
            } else if LONG_FLAGS.contains(&name) {
                apply(&mut o, name, None)?;
            } else {
                return Err(usage(format!("curl: option {name}: is unknown")));
            }
        } else if a.starts_with('-') && a.len() > 1 {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                let name = c.to_string();
                if SHORT_WITH_ARG.contains(c) {
                    let rest: String = chars[i + 1..].iter().collect();
                    let val = if !rest.is_empty() {
                        rest
                    } else {
                        match args.next() {
                            Some(v) => v.clone(),
                            None => return Err(usage(format!("curl: option -{c}: requires parameter"))),
                        }
                    };
                    apply(&mut o, &name, Some(val))?;
                    break;
                } else if SHORT_FLAGS.contains(c) {
                    apply(&mut o, &name, None)?;
                } else {
                    return Err(usage(format!("curl: option -{c}: is unknown")));
                }
                i += 1;
            }
        } else {
            o.urls.push(a.clone());
        }
    }
    if o.urls.is_empty() {
        return Err(usage("curl: no URL specified".into()));
    }
    Ok(o)
}

/// HTTP reason phrases curl prints with `-i`.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

struct Vars<'a> {
    code: u16,
    exit: i32,
    method: &'a str,
    url: &'a str,
    size: usize,
    content_type: &'a str,
}

fn write_out(fmt: &str, v: &Vars<'_>, stderr: &mut String) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            },
            '%' if chars.peek() == Some(&'%') => {
                chars.next();
                out.push('%');
            }
            '%' if chars.peek() == Some(&'{') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                match name.as_str() {
                    "http_code" | "response_code" => out.push_str(&format!("{:03}", v.code)),
                    "exitcode" => out.push_str(&v.exit.to_string()),
                    "method" => out.push_str(v.method),
                    "url_effective" | "url" => out.push_str(v.url),
                    "size_download" => out.push_str(&v.size.to_string()),
                    "content_type" => out.push_str(v.content_type),
                    "time_total" | "time_connect" | "time_starttransfer" => out.push_str("0.001000"),
                    other => stderr.push_str(&format!("curl: unknown --write-out variable: '{other}'\n")),
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Runs a curl command line from `source` (the Job's pod) and returns what curl would print.
pub fn run(sim: &Sim, source: Source, argv: &[String]) -> CurlOutput {
    let o = match parse(argv) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut exit = 0;
    let show_err = !o.silent || o.show_error;
    for raw in &o.urls {
        let url = if raw.contains("://") {
            raw.clone()
        } else {
            format!("http://{raw}")
        };
        let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
        if scheme != "http" {
            exit = 1;
            if show_err {
                stderr.push_str(&format!(
                    "curl: (1) Protocol \"{scheme}\" not supported or disabled in libcurl\n"
                ));
            }
            continue;
        }
        let method = o.method.clone().unwrap_or_else(|| {
            if o.head {
                "HEAD".into()
            } else if o.data.is_some() {
                "POST".into()
            } else {
                "GET".into()
            }
        });
        let mut headers = vec![
            ("User-Agent".to_string(), "curl/8.5.0".to_string()),
            ("Accept".to_string(), "*/*".to_string()),
        ];
        for (k, v) in &o.headers {
            headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.clone()));
        }
        if let Some(d) = &o.data {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
            }
            headers.push(("Content-Length".into(), d.len().to_string()));
        }
        let resp = super::handle(
            sim,
            &Request {
                source: source.clone(),
                method: method.clone(),
                url: url.clone(),
                headers,
            },
        );
        let parsed = super::model::parse_url(&url);
        let host = parsed.as_ref().map(|u| u.host.clone()).unwrap_or_default();
        let port = parsed.as_ref().map(|u| u.port).unwrap_or(80);
        let mut code = 0u16;
        let mut this_exit = 0;
        let mut size = 0;
        match resp.outcome {
            Outcome::Http(status) => {
                code = status;
                if o.fail && status >= 400 {
                    this_exit = 22;
                    if show_err {
                        stderr.push_str(&format!(
                            "curl: (22) The requested URL returned error: {status}\n"
                        ));
                    }
                } else {
                    let mut text = String::new();
                    if o.include || o.head {
                        text.push_str(&format!("HTTP/1.1 {status} {}\r\n", reason(status)));
                        for (k, v) in &resp.headers {
                            text.push_str(&format!("{k}: {v}\r\n"));
                        }
                        text.push_str(&format!("content-length: {}\r\n\r\n", resp.body.len()));
                    }
                    if !o.head && method != "HEAD" {
                        text.push_str(&resp.body);
                        size = resp.body.len();
                    }
                    if o.output.is_none() {
                        stdout.push_str(&text);
                    }
                }
            }
            Outcome::Reset => {
                this_exit = 56;
                if show_err {
                    stderr.push_str("curl: (56) Recv failure: Connection reset by peer\n");
                }
            }
            Outcome::DnsFailure => {
                this_exit = 6;
                if show_err {
                    stderr.push_str(&format!("curl: (6) Could not resolve host: {host}\n"));
                }
            }
            Outcome::Refused => {
                this_exit = 7;
                if show_err {
                    stderr.push_str(&format!(
                        "curl: (7) Failed to connect to {host} port {port} after 0 ms: Couldn't connect to server\n"
                    ));
                }
            }
        }
        if let Some(fmt) = &o.write_out {
            let vars = Vars {
                code,
                exit: this_exit,
                method: &method,
                url: &url,
                size,
                content_type: resp.header("content-type").unwrap_or(""),
            };
            stdout.push_str(&write_out(fmt, &vars, &mut stderr));
        }
        if this_exit != 0 {
            exit = this_exit;
        }
    }
    CurlOutput {
        exit_code: exit,
        stdout,
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_combined_and_long_options() {
        let o = parse(&args(&[
            "curl",
            "-sSf",
            "-o/dev/null",
            "-w",
            "%{http_code}\\n",
            "-X",
            "DELETE",
            "-H",
            "x-a: 1",
            "--max-time",
            "5",
            "http://api.app/x",
        ]))
        .unwrap();
        assert!(o.silent && o.show_error && o.fail);
        assert_eq!(o.output.as_deref(), Some("/dev/null"));
        assert_eq!(o.write_out.as_deref(), Some("%{http_code}\\n"));
        assert_eq!(o.method.as_deref(), Some("DELETE"));
        assert_eq!(o.headers, vec![("x-a".to_string(), "1".to_string())]);
        assert_eq!(o.urls, vec!["http://api.app/x".to_string()]);
        let e = parse(&args(&["curl", "--frobnicate", "http://x"])).unwrap_err();
        assert_eq!(e.exit_code, 2);
        assert!(e.stderr.starts_with("curl: option --frobnicate: is unknown"));
        let e = parse(&args(&["curl", "-sZ", "http://x"])).unwrap_err();
        assert!(e.stderr.starts_with("curl: option -Z: is unknown"));
        assert_eq!(parse(&args(&["curl", "-s"])).unwrap_err().exit_code, 2);
        assert_eq!(
            parse(&args(&["curl", "http://x", "-o"])).unwrap_err().exit_code,
            2
        );
    }

    #[test]
    fn write_out_variables_and_escapes() {
        let v = Vars {
            code: 0,
            exit: 56,
            method: "GET",
            url: "http://a/",
            size: 0,
            content_type: "",
        };
        let mut err = String::new();
        assert_eq!(
            write_out("%{http_code}\\n%{exitcode} 100%%", &v, &mut err),
            "000\n56 100%"
        );
        assert!(err.is_empty());
        write_out("%{nope}", &v, &mut err);
        assert!(err.contains("unknown --write-out variable: 'nope'"));
    }
}
