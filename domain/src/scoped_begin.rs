//! The statement that opens a Postgres transaction already limited to a [`Scope`]: `BEGIN`
//! and the scope's `set_config` sent together as one simple query, so a scoped transaction
//! costs one round trip to open instead of two. Every tenant request and tenant job opens one,
//! which makes this the cheapest round trip to remove.
//!
//! A simple query takes no bound parameters, so the scope's ids travel as literals. They are
//! dollar-quoted with a tag the value does not contain, which needs no escaping and does not
//! depend on `standard_conforming_strings`; a NUL (which no Postgres text can hold) is refused.

use crate::db::Scope;

/// `BEGIN` plus the `set_config` calls that make the transaction `scope`'s.
pub(crate) fn begin_statement(scope: Scope<'_>) -> Result<String, sqlx::Error> {
    Ok(match scope {
        Scope::Company(company) => format!(
            "BEGIN; SELECT set_config('app.company_id', {}, true)",
            literal(company)?
        ),
        Scope::Profile { company, profile } => format!(
            "BEGIN; SELECT set_config('app.company_id', {}, true), set_config('app.profile_id', {}, true)",
            literal(company)?,
            literal(profile)?
        ),
        Scope::Platform => "BEGIN; SELECT set_config('app.scope', 'platform', true)".to_string(),
    })
}

/// The `set_config` calls that move an open transaction to `scope` (see
/// [`crate::Tx::rescope`]). All three settings are written, so nothing of the scope before
/// carries over: a company scope after a profile's clears the profile, and only a platform
/// scope leaves `app.scope` set.
pub(crate) fn rescope_statement(scope: Scope<'_>) -> Result<String, sqlx::Error> {
    let (company, profile, platform) = match scope {
        Scope::Company(company) => (literal(company)?, "''".to_string(), "''"),
        Scope::Profile { company, profile } => (literal(company)?, literal(profile)?, "''"),
        Scope::Platform => ("''".to_string(), "''".to_string(), "'platform'"),
    };
    Ok(format!(
        "SELECT set_config('app.company_id', {company}, true), \
         set_config('app.profile_id', {profile}, true), set_config('app.scope', {platform}, true)"
    ))
}

/// `value` as a dollar-quoted string constant: `$s$value$s$`, or `$s1$…$s1$` and so on when
/// the value itself holds the tag.
fn literal(value: &str) -> Result<String, sqlx::Error> {
    if value.contains('\0') {
        return Err(sqlx::Error::InvalidArgument(
            "a scope id may not contain a NUL character".into(),
        ));
    }
    let mut tag = "$s$".to_string();
    let mut n = 0u32;
    while value.contains(&tag) {
        n += 1;
        tag = format!("$s{n}$");
    }
    Ok(format!("{tag}{value}{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_id_is_quoted_with_the_first_tag() {
        assert_eq!(literal("acme").unwrap(), "$s$acme$s$");
    }

    #[test]
    fn an_id_holding_the_tag_gets_another() {
        assert_eq!(literal("a$s$b").unwrap(), "$s1$a$s$b$s1$");
        assert_eq!(literal("$s$$s1$").unwrap(), "$s2$$s$$s1$$s2$");
    }

    #[test]
    fn quotes_and_backslashes_are_kept_as_they_are() {
        assert_eq!(literal(r"o'brien\'); --").unwrap(), r"$s$o'brien\'); --$s$");
    }

    #[test]
    fn a_rescope_writes_every_setting_so_none_carries_over() {
        let sql = rescope_statement(Scope::Company("c2")).unwrap();
        assert!(sql.contains("set_config('app.company_id', $s$c2$s$, true)"));
        assert!(sql.contains("set_config('app.profile_id', '', true)"));
        assert!(sql.contains("set_config('app.scope', '', true)"));
        let platform = rescope_statement(Scope::Platform).unwrap();
        assert!(platform.contains("set_config('app.company_id', '', true)"));
        assert!(platform.contains("set_config('app.scope', 'platform', true)"));
    }

    #[test]
    fn a_nul_is_refused() {
        assert!(literal("a\0b").is_err());
    }

    #[test]
    fn each_scope_sets_what_its_policies_read() {
        let sql = begin_statement(Scope::Profile {
            company: "c1",
            profile: "p1",
        })
        .unwrap();
        assert_eq!(
            sql,
            "BEGIN; SELECT set_config('app.company_id', $s$c1$s$, true), set_config('app.profile_id', $s$p1$s$, true)"
        );
        assert!(
            begin_statement(Scope::Platform)
                .unwrap()
                .contains("'app.scope', 'platform'")
        );
    }
}
