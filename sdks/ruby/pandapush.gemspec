# frozen_string_literal: true

require_relative "lib/pandapush/version"

Gem::Specification.new do |spec|
  spec.name = "pandapush"
  spec.version = Pandapush::VERSION
  spec.summary = "Publish to pandapush, mint its tokens and verify its webhooks"
  spec.description = "A client for the pandapush pub/sub server's HTTP API: publish, channel queries, " \
                     "JWT tokens for browsers and webhook signatures, with Ruby's standard library only."
  spec.authors = ["pandapush contributors"]
  spec.license = "MIT"
  spec.homepage = "https://github.com/instructure/pandapush"
  spec.required_ruby_version = ">= 2.7"
  spec.files = Dir["lib/**/*.rb"] + ["README.md", "pandapush.gemspec"]
  spec.require_paths = ["lib"]
  spec.metadata = { "rubygems_mfa_required" => "true", "source_code_uri" => spec.homepage }
end
