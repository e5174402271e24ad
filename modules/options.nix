# The options of nixcomply's baseline support, declared apart from their implementation
# (modules/baseline.nix). The reconciler's options live in modules/reconciler-options.nix.
{ lib, ... }:
let
  inherit (lib) mkOption types literalExpression;
  baselines = import ./baselines;

  exception = types.submodule {
    options = {
      justification = mkOption {
        type = types.nullOr types.str;
        default = null;
        defaultText = literalExpression "null (required)";
        description = "Why this host may leave the control: the risk accepted and the compensating measure.";
        example = "legacy scanner needs password login until migration";
      };
      approvedBy = mkOption {
        type = types.nullOr types.str;
        default = null;
        defaultText = literalExpression "null (required)";
        description = "Who approved the exception (the practice's security officer), as a name or e-mail address.";
        example = "security-officer@clinic.example";
      };
      expires = mkOption {
        type = types.nullOr types.str;
        default = null;
        defaultText = literalExpression "null (required)";
        description = ''
          Last day the exception is valid, as `YYYY-MM-DD`. Evaluation cannot know today's date,
          so the reconciler reports an expired exception as a finding and in its evidence.
        '';
        example = "2027-03-01";
      };
      ticket = mkOption {
        type = types.nullOr types.str;
        default = null;
        defaultText = literalExpression "null (required)";
        description = "The change or risk ticket that records the decision.";
        example = "SEC-142";
      };
    };
  };
in
{
  options.nixcomply = {
    baseline = mkOption {
      type = types.nullOr (types.enum (builtins.attrNames baselines));
      default = null;
      example = "hipaa-v1";
      description = ''
        The security baseline this host enforces. Every control of the baseline becomes NixOS
        configuration, and /etc/nixcomply/manifest.json records what the host promises for the
        reconciler and for auditors. `null` enforces nothing.
      '';
    };

    exceptions = mkOption {
      type = types.attrsOf exception;
      default = { };
      example = literalExpression ''
        {
          "ssh.password-auth-disabled" = {
            justification = "legacy scanner needs password login until migration";
            approvedBy = "security-officer@clinic.example";
            expires = "2027-03-01";
            ticket = "SEC-142";
          };
        }
      '';
      description = ''
        Controls this host does not enforce, by control id (see `nixcomply baseline controls`).
        An excepted control renders to nothing, and the exception with its justification,
        approver, expiry and ticket is recorded in the manifest and in signed evidence. This is
        the only supported way to leave the baseline: a conflicting definition of an option the
        baseline sets fails evaluation on purpose.
      '';
    };

    parameters = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = literalExpression ''{ critical_services = [ "sshd.service" "chronyd.service" "auditd.service" "ehr.service" ]; backup_max_age_hours = 12; }'';
      description = ''
        Site policy overriding the baseline's parameters (ages, drift limits, critical
        services), recorded in the manifest. A value replaces the baseline's (a list is not
        appended to). The reconciler validates the result and names any unknown or ill-typed
        parameter.
      '';
    };

    internal.controlIds = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
      internal = true;
      description = "Control ids of each rendered baseline (set by the generated modules; used by assertions).";
    };
  };
}
