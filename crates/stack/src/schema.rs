//! What a resource type accepts: its arguments (required or not, whether a change replaces the
//! resource), its nested blocks, and the attributes the server computes (`arn`, `id`).

/// One argument, e.g. `name` of `aws_kinesis_stream`.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    /// The argument's name as the Terraform AWS provider spells it.
    pub name: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// Whether changing it replaces the resource (delete, then create).
    pub force_new: bool,
}

impl Arg {
    /// A required argument that can be changed in place.
    pub const fn required(name: &'static str) -> Arg {
        Arg {
            name,
            required: true,
            force_new: false,
        }
    }

    /// An optional argument that can be changed in place.
    pub const fn optional(name: &'static str) -> Arg {
        Arg {
            name,
            required: false,
            force_new: false,
        }
    }

    /// The same argument, but a change replaces the resource.
    pub const fn force_new(self) -> Arg {
        Arg {
            force_new: true,
            ..self
        }
    }
}

/// A nested block, e.g. `kinesis { ... }` in `aws_iot_topic_rule`.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    /// The block type.
    pub name: &'static str,
    /// What the block accepts.
    pub schema: &'static Schema,
    /// Whether changing it replaces the resource.
    pub force_new: bool,
}

impl BlockSpec {
    /// A nested block that can be changed in place.
    pub const fn new(name: &'static str, schema: &'static Schema) -> BlockSpec {
        BlockSpec {
            name,
            schema,
            force_new: false,
        }
    }

    /// The same block, but a change replaces the resource.
    pub const fn force_new(self) -> BlockSpec {
        BlockSpec {
            force_new: true,
            ..self
        }
    }
}

/// The arguments, blocks and computed attributes of a resource type (or of a nested block).
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The arguments.
    pub args: &'static [Arg],
    /// The nested blocks (each kept as a list of objects under its name).
    pub blocks: &'static [BlockSpec],
    /// Attributes the server computes, known after create (`arn`, `id`, ...).
    pub computed: &'static [&'static str],
}

impl Schema {
    /// A schema of arguments only.
    pub const fn args(args: &'static [Arg]) -> Schema {
        Schema {
            args,
            blocks: &[],
            computed: &[],
        }
    }

    /// The argument `name`.
    pub fn arg(&self, name: &str) -> Option<&Arg> {
        self.args.iter().find(|a| a.name == name)
    }

    /// The nested block `name`.
    pub fn block(&self, name: &str) -> Option<&BlockSpec> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// Whether a change of the top-level key `name` replaces the resource.
    pub fn forces_new(&self, name: &str) -> bool {
        self.arg(name).map(|a| a.force_new).unwrap_or(false)
            || self.block(name).map(|b| b.force_new).unwrap_or(false)
    }

    /// The argument names and block names, for error messages.
    pub fn names(&self) -> String {
        self.args
            .iter()
            .map(|a| a.name)
            .chain(self.blocks.iter().map(|b| b.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
