-- Rows private to one profile. A transaction that acts for a profile sets `app.profile_id`
-- beside `app.company_id` (`Scope::Profile`); then a data export is visible only to the profile
-- it belongs to, even to a query that forgets the filter — another member of the same company
-- never sees it. Work done for the company as a whole (the export worker, retention, operators)
-- sets no profile and keeps the company-wide view of the tenant_isolation policy.
--
-- RESTRICTIVE: a row must pass this policy AND tenant_isolation.
CREATE POLICY profile_private ON data_exports AS RESTRICTIVE
    USING (NULLIF(current_setting('app.profile_id', true), '') IS NULL
           OR profile_id = current_setting('app.profile_id', true))
    WITH CHECK (NULLIF(current_setting('app.profile_id', true), '') IS NULL
           OR profile_id = current_setting('app.profile_id', true));
