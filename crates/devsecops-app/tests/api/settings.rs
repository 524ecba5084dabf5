//! The binary's settings: `--help`, and exit code 2 naming an invalid setting.

use std::process::Command;

fn app() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_devsecops-app"));
    cmd.env_clear().env("APP_LOG_FORMAT", "text");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run the binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_lists_the_settings() {
    let (code, text) = run(app().arg("--help"));
    assert_eq!(code, 0, "{text}");
    for name in [
        "VAULT_ADDR",
        "VAULT_CACERT",
        "APP_ROLE_ID_FILE",
        "APP_SECRET_ID_FILE",
        "APP_PORT",
        "APP_REFRESH_INTERVAL",
        "APP_LOG_LEVEL",
    ] {
        assert!(text.contains(name), "--help does not mention {name}");
    }
}

#[test]
fn an_invalid_value_exits_2_and_names_the_setting() {
    let cases: [(&str, &str, &str); 7] = [
        ("APP_PORT", "not-a-port", "--port"),
        ("APP_REFRESH_INTERVAL", "soon", "--refresh-interval"),
        ("VAULT_ADDR", "vault.example:8200", "VAULT_ADDR"),
        ("APP_ROLE_ID_FILE", "/nonexistent/role-id", "APP_ROLE_ID_FILE"),
        ("APP_LOG_LEVEL", "=?!", "APP_LOG_LEVEL"),
        ("VAULT_CLIENT_CERT", "/nonexistent/client.pem", "VAULT_CLIENT_KEY"),
        ("APP_MAX_STALE", "1s", "APP_MAX_STALE"),
    ];
    for (var, value, named) in cases {
        let mut cmd = app();
        cmd.env("VAULT_TOKEN", "dev-only-token").env(var, value);
        if var == "APP_ROLE_ID_FILE" {
            cmd.env("APP_SECRET_ID_FILE", "/nonexistent/secret-id");
        }
        let (code, text) = run(&mut cmd);
        assert_eq!(code, 2, "{var}={value}: {text}");
        assert!(text.contains(named), "{var}={value}: message does not name {named}: {text}");
    }
}

#[test]
fn an_address_with_credentials_is_refused_without_echoing_them() {
    let (code, text) =
        run(app().env("VAULT_TOKEN", "dev-only-token").env("VAULT_ADDR", "https://u:hunter2@127.0.0.1:8200"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("VAULT_ADDR") && text.contains("credentials"), "{text}");
    assert!(!text.contains("hunter2"), "the password was echoed: {text}");
}

#[test]
fn no_login_method_is_a_clear_error() {
    let (code, text) = run(&mut app());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("APP_ROLE_ID_FILE") && text.contains("VAULT_TOKEN"), "{text}");
}
